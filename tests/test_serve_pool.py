"""ModelPool and VoiceRegistry in-process: lending with a bounded queue, streams that stop when their consumer
leaves (the instance coming back, usable), and registered voices that survive a restart and a crash."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os

import numpy as np
import pytest
from _reference import shared_path

from pocket_ggml.errors import Overloaded, UnknownVoice, VoiceRegistryError
from pocket_ggml.serve.pool import ModelPool, default_workers
from pocket_ggml.serve.registry import VOICE_ID, VoiceRegistry

LONG_TEXT = " ".join(f"This is sentence number {i}, spoken only to keep the instance busy." for i in range(60))


@pytest.fixture(scope="module")
def pool():
    p = ModelPool(None, workers=1, queue=1)
    yield p
    p.close()


async def _settled(pool: ModelPool) -> None:
    """Wait (bounded) until every instance is back in the pool."""
    for _ in range(400):
        if pool.busy == 0:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"{pool.busy} instance(s) still busy")


def test_default_workers_leave_two_cpus_per_stream():
    assert [default_workers(c) for c in (1, 2, 3, 4, 8, 9)] == [1, 1, 1, 2, 4, 4]


def test_pool_describes_its_model(pool):
    assert pool.workers == 1 and pool.sample_rate == 24000 and pool.is_synthetic
    assert pool.voice_names == ("synthetic",) and pool.has_voice_cloning and pool.model_name


def test_requests_beyond_the_queue_are_refused_and_waiters_are_served_in_turn(pool):
    async def scenario():
        order = []

        async def waiter():
            async with pool.instance():
                order.append("waiter")

        async with pool.instance():
            assert pool.busy == 1
            queued = asyncio.create_task(waiter())
            await asyncio.sleep(0)
            assert pool.waiting == 1
            with pytest.raises(Overloaded) as e:
                async with pool.instance():
                    pass
            assert e.value.retry_after >= 1 and not e.value.timed_out
            order.append("holder")
        await queued
        assert order == ["holder", "waiter"]
        await _settled(pool)

    asyncio.run(scenario())


def test_a_wait_past_its_timeout_is_refused_and_leaves_the_queue(pool):
    async def scenario():
        async with pool.instance():
            with pytest.raises(Overloaded) as e:
                async with pool.instance(timeout=0.1):
                    pass
            assert e.value.timed_out
            assert pool.waiting == 0
            cancelled = asyncio.create_task(pool.instance().__aenter__())
            await asyncio.sleep(0)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            assert pool.waiting == 0
        await _settled(pool)

    asyncio.run(scenario())


def test_stream_gives_the_samples_of_generate_audio(pool):
    async def scenario():
        async with pool.instance() as model:
            voice = pool.stored_voice("synthetic")
            chunks = [c async for c in pool.stream(model, voice, "One stream, two sentences. Here.", seed=5)]
            return model, voice, chunks

    model, voice, chunks = asyncio.run(scenario())
    assert all(c.dtype == np.float32 for c in chunks)
    np.testing.assert_array_equal(
        np.concatenate(chunks), model.generate_audio(voice, "One stream, two sentences. Here.", seed=5)
    )


@pytest.mark.parametrize("how", ["break", "cancel"])
def test_a_consumer_that_leaves_stops_the_generation_and_frees_the_instance(pool, how):
    async def consume(model, voice, taken):
        async for _ in pool.stream(model, voice, LONG_TEXT, seed=1):
            taken.append(1)
            if how == "break" and len(taken) == 3:
                break
            if how == "cancel" and len(taken) == 3:
                await asyncio.sleep(3600)  # cancelled here

    async def scenario():
        voice = pool.stored_voice("synthetic")
        taken = []
        async with pool.instance() as model:
            task = asyncio.create_task(consume(model, voice, taken))
            if how == "cancel":
                while len(taken) < 3:
                    await asyncio.sleep(0.01)
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await _settled(pool)  # the generation ended (within a frame) and gave the instance back
        assert len(taken) == 3
        async with pool.instance() as model:  # and it is usable: no "already generating"
            again = [c async for c in pool.stream(model, voice, "Again.", seed=2)]
        assert again

    asyncio.run(scenario())


def test_generation_errors_reach_the_consumer(pool):
    from pocket_ggml.api import ParameterError

    async def scenario():
        async with pool.instance() as model:
            with pytest.raises(ParameterError):
                async for _ in pool.stream(model, pool.stored_voice("synthetic"), "Hi.", max_tokens=0):
                    pass
        await _settled(pool)

    asyncio.run(scenario())


# ---------------------------------------------------------------------- the registry
def test_registered_voices_survive_a_restart_and_speak_like_a_clone(pool, tmp_path):
    clip = shared_path("assets", "voices", "speaker-48k.wav")

    async def register():
        return await VoiceRegistry(pool, tmp_path).register(clip.read_bytes(), "Speaker")

    info = asyncio.run(register())
    assert VOICE_ID.fullmatch(info.id) and info.name == "Speaker" and info.source == "registered"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{info.id}.json", f"{info.id}.safetensors"]

    restarted = VoiceRegistry(pool, tmp_path)
    assert [v for v in restarted.list() if v.source == "registered"] == [info]
    state = asyncio.run(restarted.state(info.id))

    async def clone_here():
        async with pool.instance() as model:
            return model.get_state_for_audio_prompt(clip)

    direct = asyncio.run(clone_here())
    np.testing.assert_array_equal(state.snapshot.k, direct.snapshot.k)
    np.testing.assert_array_equal(state.snapshot.v, direct.snapshot.v)

    restarted.delete(info.id)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UnknownVoice):
        restarted.delete(info.id)
    with pytest.raises(VoiceRegistryError):
        restarted.delete("synthetic")


def test_what_a_crash_leaves_is_never_a_listed_voice(pool, tmp_path):
    # a state written but no metadata yet (killed between the two renames), and a half-written temp file
    (tmp_path / "voice-0123456789abcdef.safetensors").write_bytes(b"partial")
    orphan = tmp_path / "voice-3333333333333333.safetensors"  # the same, left long ago
    orphan.write_bytes(b"whole state, no metadata")
    os.utime(orphan, (0, 0))
    part = tmp_path / ".voice-fedcba9876543210.safetensors.abc.part"
    part.write_bytes(b"half")
    os.utime(part, (0, 0))  # old: left by a crash long ago
    # metadata whose state is missing, and metadata that is not JSON
    (tmp_path / "voice-1111111111111111.json").write_text(json.dumps({"name": "x", "created": 1.0}))
    (tmp_path / "voice-2222222222222222.json").write_text("{not json")
    registry = VoiceRegistry(pool, tmp_path)
    assert [v.source for v in registry.list()] == ["model"]
    assert not part.exists() and not orphan.exists()
    assert (tmp_path / "voice-0123456789abcdef.safetensors").exists()  # recent: a registration may be under way
    for voice in ("voice-0123456789abcdef", "voice-1111111111111111", "voice-2222222222222222"):
        with pytest.raises(UnknownVoice):
            asyncio.run(registry.state(voice))


@pytest.mark.parametrize(
    "voice_id", ["../x", "voice-0123456789abcdef/../../x", "/etc/passwd", "voice-0123456789ABCDEF", "", "voice-"]
)
def test_ids_that_are_not_ours_never_reach_the_file_system(pool, tmp_path, voice_id):
    registry = VoiceRegistry(pool, tmp_path)
    with pytest.raises(UnknownVoice):
        asyncio.run(registry.state(voice_id))
    with pytest.raises(UnknownVoice):
        registry.delete(voice_id)
    assert registry.get(voice_id) is None
