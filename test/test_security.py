"""The coordinator's signatures (mbrl_ros.security): keys on disk, signing, and every way a
payload is refused (unsigned, forged, another run's key, another kind, replayed, malformed)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

pytest.importorskip("cryptography", reason="the cryptography package is not installed (requirements.txt)")

from mbrl_ros import security, wire  # noqa: E402
from mbrl_ros.security import SignatureError, Signer, Verifier  # noqa: E402


def _state(**kw) -> str:
    body = {"algo": "pal", "task_id": "dclaw-turn-fixed", "iteration": 3, "phase": "collect", "collect": True,
            "estop": False, "done": False, "deployed_policy_version": 2, "samples": 480, "wall_s": 1.25,
            "model_version": 2, "policy_version": 2, "data_policy_version": 1, "sample_budget": 800, "request": {},
            "candidate_policy_version": 2, "round_samples": 0, "round_target": 200, "round_random_samples": 0,
            "round_random_target": 0, "behavior": "policy", "eval_success": None, "success_curve": [],
            "noise_policy": "mlp", "explore_noise_color": 0.0, "explore_min_std": 0.0, "explore_mean_fraction": 0.0}
    body.update(kw)
    return wire.pack_json("game_state", body)


def _policy(approved: bool = True, payload: bytes = b"onnx-bytes" * 50) -> bytes:
    return wire.pack_policy(payload, task_id="dclaw-turn-fixed", policy_version=4, model_version=4, iteration=3,
                            approved=approved, log_std=[-0.5] * 9, published_at=1.5)


def _reason(fn, *args) -> str:
    with pytest.raises(SignatureError) as info:
        fn(*args)
    return info.value.reason


def test_run_key_files_private_0600_and_public_text(tmp_path: Path) -> None:
    signer = Signer.create(tmp_path)
    private, public = security.key_paths(tmp_path)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(private.parent.stat().st_mode) == 0o700
    text = public.read_text().strip()
    assert text == signer.public_text and text.startswith("ed25519:")
    assert len(base64.b64decode(text[len("ed25519:"):])) == 32
    assert b"PRIVATE KEY" in private.read_bytes() and b"PRIVATE" not in public.read_bytes()
    with pytest.raises(FileExistsError):  # never overwrites a run's key
        Signer.create(tmp_path)
    again = Signer.load_or_create(tmp_path)  # a restarted coordinator keeps the run's key
    assert again.key_id == signer.key_id
    # the public key reaches a collector as a file path or as the text itself
    assert Verifier(str(public)).key_id == Verifier(text).key_id == signer.key_id


def test_a_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    Signer.create(tmp_path)
    private, _ = security.key_paths(tmp_path)
    os.chmod(private, 0o644)
    with pytest.raises(PermissionError, match="0600"):
        Signer.load(private)


@pytest.mark.parametrize("spec", ["ed25519:not base64!", "ed25519:" + base64.b64encode(b"short").decode(),
                                  "/nonexistent/key.pub", "ssh-ed25519 AAAA"])
def test_bad_public_keys_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        security.load_public_key(spec)


def test_signed_game_states_verify_in_order_and_replays_are_refused(tmp_path: Path) -> None:
    signer = Signer.generate()
    v = Verifier(signer.public_text)
    first = signer.sign_json(_state(iteration=1), "game_state")
    second = signer.sign_json(_state(iteration=2), "game_state")
    body = v.verify_json(first, "game_state")
    assert body["iteration"] == 1 and "signature" not in body
    assert wire.unpack_game_state(json.dumps(body)).iteration == 1  # still a valid game state
    assert v.verify_json(second, "game_state")["iteration"] == 2
    assert _reason(v.verify_json, second, "game_state") == "replay"  # the same message again
    assert _reason(v.verify_json, first, "game_state") == "replay"  # an older one
    # a signer restarted on the run's key keeps counting up (collectors keep their verifier)
    Signer.create(tmp_path)
    a = Signer.load(security.key_paths(tmp_path)[0])
    va = Verifier(a.public_text)
    va.verify_json(a.sign_json(_state(), "game_state"), "game_state")
    b = Signer.load(security.key_paths(tmp_path)[0])
    va.verify_json(b.sign_json(_state(), "game_state"), "game_state")


def test_unsigned_forged_and_foreign_game_states_are_refused() -> None:
    signer, rogue = Signer.generate(), Signer.generate()
    v = Verifier(signer.public_key)
    assert _reason(v.verify_json, _state(), "game_state") == "unsigned"
    good = json.loads(signer.sign_json(_state(), "game_state"))
    tampered = dict(good, estop=True, collect=False)  # a field changed after signing
    assert _reason(v.verify_json, json.dumps(tampered), "game_state") == "forged"
    # a rogue that copies the coordinator's key id onto its own signature
    forged = json.loads(rogue.sign_json(_state(estop=False), "game_state"))
    forged["signature"]["key_id"] = signer.key_id
    assert _reason(v.verify_json, json.dumps(forged), "game_state") == "forged"
    assert _reason(v.verify_json, rogue.sign_json(_state(), "game_state"), "game_state") == "wrong_key"
    # a signature made for another kind of message does not carry over
    assert _reason(v.verify_json, signer.sign_json(_state(), "estop_release"), "game_state") == "kind"
    for bad in ({"alg": "rsa"}, {"seq": "7"}, {"seq": True}, {"value": 12}, {"extra": 1}, {"value": "***"}):
        msg = json.loads(signer.sign_json(_state(), "game_state"))
        msg["signature"].update(bad)
        assert _reason(v.verify_json, json.dumps(msg), "game_state") == "malformed", bad
    assert _reason(v.verify_json, json.dumps(dict(good, signature="abc")), "game_state") == "malformed"
    assert _reason(v.verify_json, "[1, 2]", "game_state") == "malformed"
    assert _reason(v.verify_json, "{not json", "game_state") == "malformed"
    assert v.verify_json(json.dumps(good), "game_state")["collect"] is True  # the untouched one still passes


def test_signed_policy_records_bind_header_and_payload() -> None:
    signer = Signer.generate()
    v = Verifier(signer.public_text)
    signed = signer.sign_record(_policy())
    blob = wire.unpack_policy(signed, expect_task="dclaw-turn-fixed", check_contract=False)  # still a valid record
    assert blob.header["approved"] is True and blob.header["signature"]["kind"] == "policy"
    header = v.verify_record(signed, "policy")
    assert header["policy_version"] == 4 and header["approved"] is True

    v2 = Verifier(signer.public_text)
    assert _reason(v2.verify_record, _policy(), "policy") == "unsigned"  # "approved": true, but unsigned
    flipped = bytearray(signer.sign_record(_policy()))
    flipped[-1] ^= 0x01  # one payload byte
    assert _reason(v2.verify_record, bytes(flipped), "policy") == "forged"
    # a payload swapped together with a matching sha256 in the header: the header no longer verifies
    other = _policy(payload=b"evil-onnx" * 40)
    h_other, _ = security._split_record(other)
    h_signed, _ = security._split_record(signer.sign_record(_policy()))
    h_signed["sha256"], h_signed["payload_size"] = h_other["sha256"], h_other["payload_size"]
    head = json.dumps(h_signed, sort_keys=True).encode()
    swapped = security._PREFIX.pack(b"MBRW", len(head)) + head + b"evil-onnx" * 40
    assert _reason(v2.verify_record, swapped, "policy") == "forged"
    assert _reason(v2.verify_record, b"junk", "policy") == "malformed"
    assert _reason(v2.verify_record, signer.sign_record(_policy()), "model") == "kind"
    with pytest.raises(ValueError, match="sha256"):  # the signer refuses a record whose payload does not match
        signer.sign_record(bytes(flipped))
    v2.verify_record(signer.sign_record(_policy()), "policy")
    replayed = signer.sign_record(_policy())
    v2.verify_record(replayed, "policy")
    assert _reason(v2.verify_record, replayed, "policy") == "replay"


def test_estop_latch_only_a_newer_signed_release_clears() -> None:
    latch = security.EstopLatch()
    assert latch.signed_state(False, 0) == "" and not latch.held  # the coordinator's first state
    assert latch.raise_estop() and latch.held  # anyone raises (true on /mbrl/estop)
    assert not latch.raise_estop()  # already held
    assert latch.signed_state(False, 0) == "" and latch.held  # a state signed before the raise (in flight)
    assert latch.signed_state(True, 0) == "" and latch.held  # the coordinator saw the raise
    assert latch.signed_state(False, 1) == "release" and not latch.held  # the operator's release
    # a raise after release #1: a replay of release #1 does not clear it, #2 does
    assert latch.raise_estop()
    assert latch.signed_state(False, 1) == "" and latch.held
    assert latch.signed_state(False, 2) == "release"
    # the coordinator raises through its signed state
    assert latch.signed_state(True, 2) == "raise" and latch.held
    assert latch.signed_state(False, 2) == "" and latch.held
    assert latch.signed_state(False, 3) == "release"
    # a raise that arrives after the release that answered it stays held until the next release (safe side)
    assert latch.signed_state(False, 4) == ""
    assert latch.raise_estop() and latch.signed_state(False, 4) == "" and latch.held


def test_key_dir_overrides_the_run_directory(tmp_path: Path) -> None:
    signer = Signer.load_or_create(tmp_path / "run", key_dir=tmp_path / "shared_keys")
    private, public = security.key_paths(tmp_path / "run", tmp_path / "shared_keys")
    assert private.parent == tmp_path / "shared_keys" and stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public.read_text().strip() == signer.public_text and not (tmp_path / "run" / "keys").exists()
