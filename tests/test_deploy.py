"""The deployment files agree with the code (no Docker engine or Kubernetes runs here: what can be
checked without them is checked here; deploy/README.md says what was not run)."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _manifest() -> dict:
    return yaml.safe_load((ROOT / "deploy" / "rayservice.yaml").read_text())


def test_the_rayservice_serves_serving_config_yaml():
    embedded = yaml.safe_load(_manifest()["spec"]["serveConfigV2"])
    assert embedded["http_options"].pop("host") == "0.0.0.0"  # pods answer the Service, not only loopback
    config = yaml.safe_load((ROOT / "serving" / "config.yaml").read_text())
    config["http_options"].pop("host")
    assert embedded == config, ("deploy/rayservice.yaml's serveConfigV2 must be serving/config.yaml "
                                "(proxies on 0.0.0.0): copy the file into it")


def test_the_serve_config_builds_the_application_it_names():
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load((ROOT / "serving" / "config.yaml").read_text())
    from serving.run import serve_config

    ServeDeploySchema.model_validate(config)
    app = config["applications"][0]
    module, attr = app["import_path"].split(":")
    build = getattr(importlib.import_module(module), attr)

    args = serve_config(ROOT / "serving" / "config.yaml")
    application = build({**args, "settings": {}})
    bound = {d.name: d for d in _bound(application)}
    names = {d["name"] for d in app["deployments"]}
    assert names == set(bound), f"config.yaml names {sorted(names)}, serving.app:build binds {sorted(bound)}"
    for name, opts in args["deployments"].items():  # the options travel into the bound deployments
        config = bound[name]._deployment_config
        if "autoscaling_config" in opts:
            assert config.autoscaling_config.max_replicas == opts["autoscaling_config"]["max_replicas"]
        if "num_replicas" in opts:
            assert config.num_replicas == opts["num_replicas"]
        assert bound[name].ray_actor_options["num_cpus"] == opts["ray_actor_options"]["num_cpus"]


def _bound(application) -> list:
    """The deployments an application binds, through the applications passed to their constructors."""
    from ray.serve import Application

    stack, out = [application], []
    while stack:
        d = stack.pop()._bound_deployment
        out.append(d)
        stack += [a for a in [*d.init_args, *d.init_kwargs.values()] if isinstance(a, Application)]
    return out


def test_ray_and_python_versions_match_the_project():
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ray_pin = next(p for p in pins if p.startswith("ray[")).split("==")[1]
    assert _manifest()["spec"]["rayClusterConfig"]["rayVersion"] == ray_pin
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), f"base image {base} is not a pinned Python 3.11"


def test_the_dockerfile_runs_the_readme_install_as_a_non_root_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    readme = (ROOT / "README.md").read_text()
    install = re.search(r"^(python3\.11 -m venv \.venv && \.venv/bin/pip install -e \.) && \.venv/bin/onevision",
                        readme, re.M).group(1)
    run = re.search(r"^RUN (python3\.11 -m venv .*)$", dockerfile, re.M).group(1)
    assert run.replace(" --no-cache-dir", "") == install
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert dockerfile.index("USER ") < dockerfile.index("pip install")  # installed as that user too
    cmd = re.search(r'^CMD \[(.*)\]', dockerfile, re.M).group(1)
    module = re.search(r'"-m", "([\w.]+)"', cmd).group(1)
    assert importlib.util.find_spec(module) is not None
    for pod in _pods():
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def _pods() -> list[dict]:
    cluster = _manifest()["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]


def test_the_pods_read_settings_that_exist_from_one_secret():
    from infra.settings import Settings

    secret = yaml.safe_load((ROOT / "deploy" / "secret.example.yaml").read_text())
    for pod in _pods():
        for c in pod["spec"]["containers"]:
            assert c["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    keys = [k for k in secret["stringData"] if k.startswith("ONEVISION_")]
    assert keys
    for key in keys:
        section, _, field = key.removeprefix("ONEVISION_").lower().partition("__")
        model = Settings.model_fields[section].annotation if field else None
        assert section in Settings.model_fields, key
        if field:
            assert field in model.model_fields, key
    gpu = [g for g in _manifest()["spec"]["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == "gpu"]
    assert gpu and gpu[0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_the_readme_says_how_to_run_on_an_existing_ray_cluster():
    readme = (ROOT / "README.md").read_text()
    assert "deploy/README.md" in readme and "--address" in readme
