"""Model stages placed on cluster workers: `models.placement` (and the pass-rate corpus's `placement`)
become Beam resource hints on the RunInference step alone, read back here from the pipeline proto
a runner receives (what Dataflow's right-fitting reads), and model sharing reaches RunInference."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.transforms.resources import AcceleratorHint, CpuCountHint, MinRamHint
from tiny_models import build_tiny_clip
from webdataset import TarWriter

from mmcurate.pipelines.caption import CORPUS, CaptionConfig
from mmcurate.pipelines.config import ConfigError, load_config
from mmcurate.pipelines.inference import GuardedHandler
from mmcurate.pipelines.models import model_stages
from mmcurate.pipelines.run import new_run
from mmcurate.stages.readers import list_units

GPU = "type:nvidia-l4;count:1;install-nvidia-driver"


def _config(tiny: dict[str, str], placement: dict) -> CaptionConfig:
    clip = {"model": "mmcurate-tiny-clip", "pretrained": tiny["ckpt"], "architecture": tiny["arch"]}
    return CaptionConfig.model_validate(
        {"filters": {"clip_score": {"min": 0.1}}, "models": {"clip": clip, "placement": placement}}
    )


def _hints_by_step(p: beam.Pipeline) -> dict[str, dict[str, bytes]]:
    """Each leaf step's resource hints, from the runner API proto the pipeline is submitted as."""
    proto = p.to_runner_api()
    envs = proto.components.environments
    return {
        t.unique_name: dict(envs[t.environment_id].resource_hints) if t.environment_id else {}
        for t in proto.components.transforms.values()
        if not t.subtransforms
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def test_resource_hints_sit_on_the_model_call_alone(tiny: dict[str, str], tmp_path: Path) -> None:
    shard = tmp_path / "in.tar"
    with TarWriter(str(shard)) as w:
        w.write({"__key__": "a", "txt": "a caption here", "jpg": b"not decoded while building"})
    config = _config(tiny, {"clip": {"accelerator": GPU, "min_ram": "16GB"}})
    inputs = [str(shard)]
    units = list_units(inputs, config.read)
    p = beam.Pipeline()
    CORPUS.build(p, units, config, new_run(CORPUS, config, inputs, units, str(tmp_path / "out")))
    hints = _hints_by_step(p)
    model = {name: h for name, h in hints.items() if "RunInference[clip]" in name}
    others = {name: h for name, h in hints.items() if "RunInference[clip]" not in name}
    assert model and others
    accel, ram = AcceleratorHint.urn, MinRamHint.urn
    assert all(h.get(accel) == GPU.encode() and h.get(ram) == str(16 * 10**9).encode() for h in model.values())
    assert not any(accel in h or ram in h for h in others.values())  # decode, merge, finish: plain workers
    assert any(name.startswith("DecodeAndScore") for name in others)
    (stage,) = model_stages(config)
    assert not GuardedHandler(stage.handler, placement=stage.placement).share_model_across_processes()


def test_model_sharing_only_where_the_model_can_be_served_through_beams_proxy(tiny: dict[str, str]) -> None:
    """Beam's shared model is a multi-process proxy that passes method calls only: a CLIP tower read
    by attribute would fail every record, so it is refused naming the key; vLLM rollouts (a server
    per machine) share, and GuardedHandler tells RunInference so."""
    from mmcurate.pipelines.models import check_placement_of
    from mmcurate.pipelines.passrate import PassRateConfig
    from mmcurate.pipelines.rollouts import make_handler

    with pytest.raises(ConfigError, match=r"^models\.placement\.clip\.share_model: "):
        model_stages(_config(tiny, {"clip": {"share_model": True}}))
    with pytest.raises(ConfigError, match=r"^models\.placement\.clip\.share_model: "):
        model_stages(_config(tiny, {"clip": {"model_copies": 2}}))
    rl = PassRateConfig.model_validate({
        "rollout": {"backend": "vllm", "vllm": {"model": "org/model"}},
        "placement": {"rollout": {"share_model": True, "model_copies": 2}}})  # fmt: skip
    vllm = make_handler(rl.rollout)
    check_placement_of(rl.placement, {"rollout": vllm}, "placement", set())
    guarded = GuardedHandler(vllm, placement=rl.placement["rollout"])
    assert guarded.share_model_across_processes() and guarded.model_copies() == 2
    local = rl.model_copy(update={"rollout": rl.rollout.model_copy(update={"backend": "transformers"})})
    with pytest.raises(ConfigError, match=r"^placement\.rollout\.share_model: "):
        check_placement_of(local.placement, {"rollout": make_handler(local.rollout)}, "placement", set())


def test_passrate_hints_sit_on_the_rollouts_alone(tmp_path: Path) -> None:
    from mmcurate.pipelines import corpus as corpora
    from mmcurate.pipelines.passrate import PassRateConfig

    data = tmp_path / "q.jsonl"
    data.write_text('{"question": "how many cats ?", "answer": "2"}\n')
    cfg = PassRateConfig.model_validate({
        "rollout": {"backend": "transformers", "transformers": {"model": str(tmp_path / "model")}},
        "placement": {"rollout": {"accelerator": GPU, "cpu_count": 4}}})  # fmt: skip
    rl = corpora.get("rl")
    units = rl.list_units([str(data)], cfg)
    p = beam.Pipeline()
    rl.build(p, units, cfg, new_run(rl, cfg, [str(data)], units, str(tmp_path / "out")))
    hints = _hints_by_step(p)
    rollouts = {n: h for n, h in hints.items() if n.startswith("Rollouts")}
    assert rollouts and all(h.get(AcceleratorHint.urn) == GPU.encode() for h in rollouts.values())
    assert all(h.get(CpuCountHint.urn) == b"4" for h in rollouts.values())
    assert not any(AcceleratorHint.urn in h for n, h in hints.items() if not n.startswith("Rollouts"))


def test_without_placement_no_step_asks_for_an_accelerator(tiny: dict[str, str], tmp_path: Path) -> None:
    shard = tmp_path / "in.tar"
    with TarWriter(str(shard)) as w:
        w.write({"__key__": "a", "txt": "a caption here", "jpg": b"x"})
    config = _config(tiny, {})
    units = list_units([str(shard)], config.read)
    p = beam.Pipeline()
    CORPUS.build(p, units, config, new_run(CORPUS, config, [str(shard)], units, str(tmp_path / "out")))
    hints = _hints_by_step(p)
    assert any("RunInference[clip]" in n for n in hints)
    assert not any(AcceleratorHint.urn in h for h in hints.values())


@pytest.mark.parametrize(
    ("placement", "key"),
    [
        ("{clipp: {accelerator: 'type:nvidia-l4'}}", "models.placement"),
        ("{clip: {accelerator: 'nvidia-l4'}}", "models.placement.clip.accelerator"),
        ("{ocr: {min_ram: lots}}", "models.placement.ocr.min_ram"),
        ("{ocr: {model_copies: 0}}", "models.placement.ocr.model_copies"),
        ("{ocr: {gpus: 1}}", "models.placement.ocr.gpus"),
    ],
)
def test_bad_placement_fails_fast_naming_the_key(tmp_path: Path, placement: str, key: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"models:\n  placement: {placement}\n")
    with pytest.raises(ConfigError, match=rf"yaml: {key.replace('.', '[.]')}: "):
        load_config(str(cfg), CaptionConfig, "caption.yaml")


def test_passrate_placement_names_its_own_stages(tmp_path: Path) -> None:
    from mmcurate.pipelines.passrate import PassRateConfig

    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"placement: {{rollout: {{accelerator: '{GPU}', share_model: true}}}}\n")
    loaded = load_config(str(cfg), PassRateConfig, "passrate.yaml")
    assert loaded.placement["rollout"].hints() == {"accelerator": GPU}
    cfg.write_text("placement: {clip: {min_ram: 8GB}}\n")
    with pytest.raises(ConfigError, match=r"yaml: placement: unknown model stage.*known: rollout, ocr"):
        load_config(str(cfg), PassRateConfig, "passrate.yaml")


def test_unusable_placement_stops_the_cli_before_anything_is_written(tiny: dict[str, str], tmp_path: Path) -> None:
    from mmcurate.cli import main

    shard = tmp_path / "in.tar"
    with TarWriter(str(shard)) as w:
        w.write({"__key__": "a", "txt": "a caption here", "jpg": b"x"})
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"filters: {{clip_score: {{min: 0.1}}}}\\nmodels:\\n  clip: {{model: mmcurate-tiny-clip, "
                   f"pretrained: {tiny['ckpt']}, architecture: {tiny['arch']}}}\\n"
                   "  placement: {clip: {share_model: true}}\\n")  # fmt: skip
    out = tmp_path / "out"
    assert main(["caption", "--input", str(shard), "--output", str(out), "--config", str(cfg), "--no-progress"]) == 2
    assert not out.exists()
