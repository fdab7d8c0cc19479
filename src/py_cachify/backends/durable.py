"""Durable acquires: the script and a WAIT on one connection, sent together as one round trip.

WAIT cannot run inside a script, and it counts the replicas that acknowledged the writes
of its own connection only, so it must follow the EVALSHA on the very same connection: a
pipeline of the two (no MULTI: a script is atomic already). On a cluster that connection
is the one to the master of the pool's slot. The reply is [the script's reply, replicas
that acknowledged]; `ops.attempt` reads it.
"""

from __future__ import annotations

from typing import Any

from redis import exceptions as rex
from redis.asyncio.cluster import PipelineCommand
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from ..ops import Call

__all__ = ['arun', 'run']


def run(client: Any, script: Any, call: Call) -> list[object]:
    """Run durable `call` with redis-py `Script` `script` on a sync client (plain, Sentinel or cluster)."""
    cluster: Any = client if isinstance(client, RedisCluster) else None
    node = client if cluster is None else cluster.get_redis_connection(cluster.get_node_from_key(call.keys[0]))
    for loaded in (False, True):
        pipe = node.pipeline(transaction=False)
        pipe.execute_command('EVALSHA', script.sha, len(call.keys), *call.keys, *call.args)
        pipe.execute_command('WAIT', call.replicas, call.replica_timeout_ms)
        reply, acked = pipe.execute(raise_on_error=False)
        if isinstance(reply, rex.NoScriptError) and not loaded:
            script.sha = _text(node.script_load(script.script))
            continue
        if isinstance(reply, rex.MovedError) and cluster is not None:
            cluster.nodes_manager.initialize()  # the slot moved (a failover): look the masters up again
        return _checked(reply, acked)
    raise AssertionError('unreachable')


async def arun(client: Any, script: Any, call: Call) -> list[object]:
    """Run durable `call` on an asyncio client (plain, Sentinel or cluster)."""
    for loaded in (False, True):
        commands = [
            ('EVALSHA', script.sha, len(call.keys), *call.keys, *call.args),
            ('WAIT', call.replicas, call.replica_timeout_ms),
        ]
        if isinstance(client, AsyncRedisCluster):
            reply, acked = await _acluster_pipeline(client, call.keys[0], commands)
        else:
            pipe = client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            reply, acked = await pipe.execute(raise_on_error=False)
        if isinstance(reply, rex.NoScriptError) and not loaded:
            script.sha = await _aload(client, call.keys[0], script.script)
            continue
        if isinstance(reply, rex.MovedError) and isinstance(client, AsyncRedisCluster):
            cluster: Any = client
            await cluster.nodes_manager.initialize()  # the slot moved (a failover): look the masters up again
        return _checked(reply, acked)
    raise AssertionError('unreachable')


async def _acluster_pipeline(client: Any, key: str, commands: list[tuple[Any, ...]]) -> list[object]:
    # redis-py's asyncio cluster pipeline sends a keyless WAIT to other nodes than the script's,
    # so the two go down one connection of the slot's master, as its own pipelines do.
    node = client.get_node_from_key(key)
    batch = [PipelineCommand(i, *command) for i, command in enumerate(commands)]
    await node.execute_pipeline(batch)
    return [command.result for command in batch]


async def _aload(client: Any, key: str, source: str) -> str:
    if isinstance(client, AsyncRedisCluster):
        cluster: Any = client
        sha = await cluster.get_node_from_key(key).execute_command('SCRIPT LOAD', source)
    else:
        sha = await client.script_load(source)
    return _text(sha)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _checked(reply: object, acked: object) -> list[object]:
    """The pair, or the first error either command met."""
    for result in (reply, acked):
        if isinstance(result, Exception):
            raise result
    return [reply, acked]
