"""run.json states what ran: for every strategy of every runnable config (demo, densecrf and
the paper configs' tiny twins), each refiner's and injector's recorded init_args equal the
built objects' own attributes; presets are resolved (a WSSS Correspondence records beta 0.9)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import ROOT

CONFIGS = ["configs/demo.yaml", "configs/densecrf.yaml", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs/paper/tiny").glob("*.yaml"))]


def comparable(value):
    return json.loads(json.dumps(list(value) if isinstance(value, tuple) else value, default=str))


@pytest.mark.parametrize("config", CONFIGS)
def test_recorded_init_args_equal_the_objects_attributes(config, monkeypatch):
    from g4seg.run.cli import G4SegCLI, record_resolved
    from g4seg.run.module import G4SegModule

    monkeypatch.chdir(ROOT)
    cli = G4SegCLI(G4SegModule, subclass_mode_data=True, save_config_callback=None, run=False,
                   args=["--config", config, "--output_dir", "/nonexistent/never-written"])  # fmt: skip
    dumped = json.loads(cli.parser.dump(cli.config, format="json", skip_none=False))
    record_resolved(dumped, cli.model, cli.datamodule)
    checked = 0
    model = dumped["model"]
    parts = [(r, node) for spec, s in zip(cli.model.specs, model["strategies"]) for r, node in zip(spec.refiners, s["refiners"])]
    parts += [(cli.model.injectors[name], node) for name, node in (model.get("injectors") or {}).items()]
    for obj, node in parts:
        for key, value in node.get("init_args", {}).items():
            attribute = obj.__dict__.get(key)
            if attribute is not None and not hasattr(attribute, "parameters"):
                assert comparable(attribute) == value, f"{config}: {type(obj).__name__}.{key}"
                checked += 1
        if type(obj).__name__ == "Correspondence":
            assert node["init_args"]["beta"] == obj.beta
            if node["init_args"].get("preset") == "wsss":
                assert obj.beta == 0.9
        if type(obj).__name__ == "DenseCRF":
            init = node["init_args"]
            assert (init["gaussian_sxy"], init["gaussian_compat"]) == obj.gaussian
            assert (init["bilateral_sxy"], init["bilateral_srgb"], init["bilateral_compat"]) == obj.bilateral
    assert checked > 0
    assert not Path("/nonexistent/never-written").exists()
