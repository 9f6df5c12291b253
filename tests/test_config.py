import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from densemnv3.config import Config, load_config, save_config
from densemnv3.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def base(tmp_path):
    write(
        tmp_path / "base.py",
        "from densemnv3.config import Config\ncfg = Config()\ncfg.optim.lr = 0.1\n",
    )
    return tmp_path / "base.py"


def test_overrides_convert_types(base):
    cfg = load_config(
        base,
        [
            "optim.lr=0.02",
            "data.crop_size=[64,128]",
            "train.amp=false",
            "data.eval_resize=None",
            "model.options.pool=paper",
            "data.synthetic.train=7",
            "work_dir=/tmp/x",
        ],
    )
    assert cfg.optim.lr == 0.02 and isinstance(cfg.optim.lr, float)
    assert cfg.data.crop_size == (64, 128)
    assert cfg.train.amp is False
    assert cfg.data.eval_resize is None
    assert cfg.model.options == {"pool": "paper"}
    assert cfg.data.synthetic.train == 7  # a None section is created on demand
    assert cfg.work_dir == "/tmp/x"


def test_int_is_accepted_for_float(base):
    assert load_config(base, ["optim.lr=1"]).optim.lr == 1


@pytest.mark.parametrize(
    "override,message",
    [
        ("optim.lrr=1", "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
        ("schedul.iters=3", "did you mean 'schedule'?"),
        ("optim.lr=fast", "config key 'optim.lr': expected float, got 'fast'"),
        ("train.seed=1.5", "expected int"),
        ("data.crop_size=5", "expected tuple[int, int]"),
        ("optim.lr", "expected KEY=VALUE"),
        ("optim.lr.x=1", "is a value, not a section"),
    ],
)
def test_bad_overrides(base, override, message):
    with pytest.raises(ConfigError) as info:
        load_config(base, [override])
    assert message in str(info.value)


def test_derived_config_edits_a_fresh_copy_of_its_base(tmp_path, base):
    write(tmp_path / "derived.py", "from base import cfg\ncfg.optim.lr = 0.5\n")
    assert load_config(tmp_path / "derived.py").optim.lr == 0.5
    assert load_config(base).optim.lr == 0.1  # the base is re-run, not the edited module object


def test_repo_configs_load():
    for name in ("lraspp_cityscapes", "lraspp_mnv3small_cityscapes", "lraspp_synthetic"):
        cfg = load_config(ROOT / "configs" / f"{name}.py")
        assert cfg.task == "segmentation"
    assert (
        load_config(ROOT / "configs/lraspp_mnv3small_cityscapes.py").model.name
        == "lraspp_mobilenet_v3_small"
    )
    # the derived small config did not leak into the base
    assert (
        load_config(ROOT / "configs/lraspp_cityscapes.py").model.name == "lraspp_mobilenet_v3_large"
    )


def test_model_backbone_from_a_config_or_set(base):
    assert load_config(base).model.backbone is None
    assert load_config(base, ["model.backbone=tv:resnet18"]).model.backbone == "tv:resnet18"
    cfg = load_config(base, ["model.backbone=tv:resnet18", "model.backbone.output_stride=8"])
    assert cfg.model.backbone == {"name": "tv:resnet18", "output_stride": 8}
    cfg = load_config(base, ["model.backbone={'name': 'timm:resnet18', 'output_stride': 16}"])
    assert cfg.model.backbone == {"name": "timm:resnet18", "output_stride": 16}
    assert load_config(base, ["model.backbone.name=mobilenet_v2"]).model.backbone == {
        "name": "mobilenet_v2"
    }
    seg = load_config(ROOT / "configs/lraspp_resnet18_synthetic.py")
    assert (seg.model.name, seg.model.backbone) == (
        "lraspp",
        {"name": "tv:resnet18", "output_stride": 16},
    )
    det = load_config(
        ROOT / "configs/ssdlite_shufflenet_synthetic.py", ["model.backbone=timm:resnet18"]
    )
    assert (det.task, det.model.name, det.model.backbone) == (
        "detection",
        "ssdlite",
        "timm:resnet18",
    )


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.py")
    write(tmp_path / "nocfg.py", "x = 1\n")
    with pytest.raises(ConfigError, match="must define `cfg"):
        load_config(tmp_path / "nocfg.py")
    write(
        tmp_path / "broken.py", "from densemnv3.config import Config\n\ncfg = Config(\n  tsk='x')\n"
    )
    with pytest.raises(ConfigError, match=r"broken.py:\d+: error in config: TypeError"):
        load_config(tmp_path / "broken.py")
    write(
        tmp_path / "wrongtype.py",
        "from densemnv3.config import Config\ncfg = Config()\ncfg.data.batch_size = '8'\n",
    )
    with pytest.raises(ConfigError, match="'data.batch_size': expected int, got '8'"):
        load_config(tmp_path / "wrongtype.py")


def test_saved_config_round_trips(tmp_path, base):
    cfg = load_config(base, ["data.crop_size=[32,64]", "model.options.pool=paper"])
    path = save_config(cfg, tmp_path / "run" / "config.py")
    assert load_config(path) == cfg
    assert isinstance(cfg, Config)


def test_cli_misspelled_key_gives_did_you_mean_not_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools/train_seg.py"),
            str(ROOT / "configs/lraspp_synthetic.py"),
            "--set",
            "optim.lrr=0.1",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: unknown config key 'optim.lrr' (did you mean 'optim.lr'?); valid keys here: "
        "optim.name, optim.lr, optim.momentum, optim.weight_decay, optim.norm_weight_decay, "
        "optim.nesterov, optim.clip_grad_norm"
    )
    assert "Traceback" not in proc.stderr


def test_importing_config_loads_no_torch():
    code = "import sys, densemnv3.config, densemnv3.errors; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_config_outside_repo_derives_from_shipped_config(tmp_path):
    """A user's config in their own folder imports a shipped one, run from elsewhere, with only
    the package itself on the path (the checkout's root, which holds configs/, is not)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "densemnv3").symlink_to(ROOT / "densemnv3")
    user = tmp_path / "my_project" / "my_seg.py"
    user.parent.mkdir()
    write(user, "from configs.lraspp_synthetic import cfg\ncfg.optim.lr = 0.123\n")
    code = (
        "import sys; from densemnv3.config import load_config; "
        "a = load_config('my_project/my_seg.py'); "
        f"b = load_config({str(ROOT / 'configs/lraspp_synthetic.py')!r}); "
        "print(a.optim.lr, b.optim.lr, a.schedule.iters == b.schedule.iters, "
        "any(m.split('.')[0] == 'configs' for m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lr, base_lr, same_schedule, leaked = out.stdout.split()
    assert float(lr) == 0.123 and float(base_lr) != 0.123  # the edit does not leak into the base
    assert same_schedule == "True" and leaked == "False"


def test_shipped_configs_load_by_name_and_an_unknown_name_lists_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # names work from anywhere
    by_name = load_config("lraspp_synthetic", ["optim.lr=0.5"])
    assert by_name == load_config(ROOT / "configs" / "lraspp_synthetic.py", ["optim.lr=0.5"])
    with pytest.raises(ConfigError) as info:
        load_config("lraspp_synthtic")
    message = str(info.value)
    assert message.startswith(
        "unknown config 'lraspp_synthtic' (did you mean 'lraspp_synthetic'?); "
        "the shipped configs are lraspp_ade20k, lraspp_cityscapes, "
    )
    assert "ssdlite_synthetic" in message and message.endswith("or give a config file's path")
    with pytest.raises(
        ConfigError,
        match=r"configs/lraspp_synthetic.py: config file not found "
        r"\(a shipped config: give its name, lraspp_synthetic\)",
    ):
        load_config("configs/lraspp_synthetic.py")  # a clone's path, from another folder


def test_user_config_derives_from_the_package_configs(tmp_path):
    """``from densemnv3.configs.X import cfg``: the import that works after a plain pip install;
    an edit stays in the derived config, also when the base was imported before."""
    import densemnv3.configs.lraspp_synthetic as imported_before

    write(
        tmp_path / "mine.py",
        "from densemnv3.configs.lraspp_synthetic import cfg\ncfg.optim.lr = 0.321\n",
    )
    mine = load_config(tmp_path / "mine.py")
    assert mine.optim.lr == 0.321 and imported_before.cfg.optim.lr != 0.321
    assert load_config("lraspp_synthetic").optim.lr == imported_before.cfg.optim.lr


def test_load_model_and_the_predictor_take_a_shipped_config_by_name(tmp_path):
    import torch

    from densemnv3.inference import Predictor
    from densemnv3.load import load_model

    small = ["model.name=lraspp_mobilenet_v3_small"]
    loaded = load_model("lraspp_synthetic", overrides=small)
    assert loaded.cfg == load_config(ROOT / "configs" / "lraspp_synthetic.py", small)
    torch.save({"model": loaded.model.state_dict()}, tmp_path / "w.pt")
    predictor = Predictor.from_config(
        "lraspp_synthetic", tmp_path / "w.pt", device="cpu", overrides=small
    )
    assert predictor(np.zeros((64, 128, 3), np.uint8)).shape == (64, 128)
