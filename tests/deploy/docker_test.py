#!/usr/bin/python3
"""ctest deploy_docker: invariants of docker/Dockerfile and docker/Dockerfile.cuda.

No Docker engine runs where the tests run, and hadolint is not packaged for Debian, so this
parses the Dockerfiles and checks what matters for eqsim (each failure names the file, line and
rule):
  * multi-stage; every base image pinned (no :latest); final stage on Debian 12 like the build;
  * builder runs scripts/install-deps.sh --no-test-tools, runtime --runtime-only, and every
    option passed exists in the script;
  * runtime stage: non-root USER 10001 (created with that uid), VOLUME /models /data /state,
    /state owned by 10001, EXPOSE = the server's default --port and --metrics_port, exec-form
    ENTRYPOINT eqsim-server and CMD whose paths are the volumes and whose ports are exposed,
    a HEALTHCHECK whose program is installed in the image and probes the exposed gRPC port;
  * the programs copied from the build are CMake targets, every COPY --from names an earlier
    stage, every COPY source exists and is inside the .dockerignore'd build context;
  * hadolint-style rules: exec-form CMD/ENTRYPOINT, apt lists removed in the RUN that filled
    them, --no-install-recommends, pipefail SHELL, absolute WORKDIR, no ADD of local files,
    and shellcheck on every RUN script (when shellcheck is installed);
  * with built binaries (EQSIM_BIN_DIR): CMD flags exist in `eqsim-server --helpfull` and the
    HEALTHCHECK command exists (`eqsim health` against a closed port exits 1, not 2 = usage);
  * --configure: the build context alone (what .dockerignore lets through) configures with
    CMake the way the builder stage does.
--binaries-only reports only the checks against the built binaries (exit 77 if none is built).
Usage: docker_test.py --source-dir DIR [--bin-dir DIR] [--configure] [--self-test] [--binaries-only]
Exit 0 pass, 1 fail, 2 usage, 77 skipped.
"""
import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

DOCKERFILES = ("docker/Dockerfile", "docker/Dockerfile.cuda")
NON_ROOT_UID = "10001"
VOLUMES = {"/models", "/data", "/state"}
# eqsim-server's defaults when its source can't be read (server/ is written in parallel).
FALLBACK_PORTS = {"port": 8500, "metrics_port": 8502}


class Instruction:
    def __init__(self, keyword, raw, line):
        self.keyword = keyword.upper()
        self.raw = raw  # as written, line continuations kept (for shellcheck)
        self.value = raw.replace("\\\n", "")  # as Docker reads it
        self.line = line

    def json_args(self):
        """The exec-form (JSON array) arguments, or None for shell form."""
        v = self.value.strip()
        if not v.startswith("["):
            return None
        try:
            parsed = json.loads(v)
        except ValueError:
            return None
        return parsed if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed) else None


class Stage:
    def __init__(self, base, name, line):
        self.base = base
        self.name = name
        self.line = line
        self.instructions = []

    def all(self, keyword):
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text):
    """Returns (global ARG defaults, stages). Handles comments and line continuations."""
    logical = []
    buf, start = "", None
    for n, raw in enumerate(text.split("\n"), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped by Docker
        if start is None:
            start = n
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip() + "\n"
            continue
        buf += raw
        logical.append((start, buf))
        buf, start = "", None
    if buf:
        logical.append((start, buf))
    args, stages = {}, []
    for line, text in logical:
        m = re.match(r"\s*([A-Za-z]+)\s*(.*)", text, re.S)
        keyword, value = m.group(1).upper(), m.group(2).strip()
        if keyword == "FROM":
            parts = value.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            base = re.sub(r"\$\{?(\w+)\}?", lambda x: args.get(x.group(1), x.group(0)), parts[0])
            stages.append(Stage(base, name, line))
        elif not stages:
            if keyword == "ARG":
                k, _, v = value.partition("=")
                args[k.strip()] = v.strip().strip('"')
        else:
            stages[-1].instructions.append(Instruction(keyword, value, line))
    return args, stages


# ---- .dockerignore (moby semantics: last matching pattern wins, parents count) ----

def _pattern_regex(pattern):
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if i < len(pattern) and pattern[i] == "/":
                out = out[:-2] + "(?:.*/)?"
                i += 1
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = pattern.find("]", i)
            out += pattern[i:j + 1] if j > 0 else re.escape(c)
            i = j if j > 0 else i
        else:
            out += re.escape(c)
        i += 1
    return re.compile("^" + out + "$")


def load_dockerignore(path):
    rules = []
    if os.path.exists(path):
        for raw in open(path, encoding="utf-8"):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclude = not line.startswith("!")
            pat = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            rules.append((exclude, _pattern_regex(pat)))
    return rules


def in_context(rules, rel):
    """True when `rel` (relative to the context root) is sent to the builder."""
    parts = rel.strip("/").split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    excluded = False
    for exclude, rx in rules:
        if any(rx.match(p) for p in prefixes):
            excluded = exclude
    return not excluded


# ---- checks ----

class Checker:
    def __init__(self, src, bin_dir):
        self.src = src
        self.bin_dir = bin_dir
        self.errors = []
        self.notes = []
        self.ignore = load_dockerignore(os.path.join(src, ".dockerignore"))

    def err(self, where, msg):
        self.errors.append("%s: %s" % (where, msg))

    def install_deps_options(self):
        text = open(os.path.join(self.src, "scripts/install-deps.sh"), encoding="utf-8").read()
        return set(re.findall(r"^\s*(--[a-z][a-z-]*)\)", text, re.M))

    def server_defaults(self):
        found = {}
        server = os.path.join(self.src, "server")
        for name in sorted(os.listdir(server)) if os.path.isdir(server) else []:
            if not name.endswith(".cc"):
                continue
            text = open(os.path.join(server, name), encoding="utf-8", errors="replace").read()
            for flag in FALLBACK_PORTS:
                m = re.search(r"ABSL_FLAG\(\s*[\w:]+\s*,\s*%s\s*,\s*(\d+)" % flag, text)
                if m:
                    found[flag] = int(m.group(1))
        for flag, v in FALLBACK_PORTS.items():
            if flag not in found:
                self.notes.append("server/ defines no --%s yet: assuming %d" % (flag, v))
                found[flag] = v
        return found

    def cmake_targets(self):
        targets = set()
        for root, dirs, files in os.walk(self.src, followlinks=True):
            dirs[:] = [d for d in dirs if not d.startswith(("build", ".", "node_modules"))]
            if "CMakeLists.txt" in files:
                text = open(os.path.join(root, "CMakeLists.txt"), encoding="utf-8").read()
                targets.update(re.findall(r"add_executable\(\s*([\w.+-]+)", text))
        return targets

    def check_file(self, rel):
        path = os.path.join(self.src, rel)
        if not os.path.exists(path):
            self.err(rel, "missing")
            return None
        text = open(path, encoding="utf-8").read()
        args, stages = parse_dockerfile(text)
        at = lambda line: "%s:%d" % (rel, line)
        if len(stages) < 2:
            self.err(rel, "must be multi-stage (a build stage and a slim runtime stage)")
            return None
        names = set()
        for s in stages:
            if ":" not in s.base.split("/")[-1] and "@" not in s.base and s.base not in names:
                self.err(at(s.line), "base image '%s' is not pinned to a tag (DL3006)" % s.base)
            if s.base.endswith(":latest"):
                self.err(at(s.line), "base image '%s' uses :latest (DL3007)" % s.base)
            if s.name:
                names.add(s.name)
        final, builder = stages[-1], None
        if final.base != "debian:12":
            self.err(at(final.line), "runtime stage must be debian:12 (bookworm), the system the "
                     "project is built and tested on; got '%s'" % final.base)

        options = self.install_deps_options()
        runs = lambda stage: [i for i in stage.all("RUN")]
        def install_deps_calls(stage):
            calls = []
            for i in runs(stage):
                for m in re.finditer(r"install-deps\.sh((?:\s+--[a-z-]+)*)", i.value):
                    calls.append((i, m.group(1).split()))
            return calls
        for s in stages:
            for i, opts in install_deps_calls(s):
                for o in opts:
                    if o not in options:
                        self.err(at(i.line), "scripts/install-deps.sh has no option %s" % o)
        build_stages = [s for s in stages[:-1] if any(
            "--no-test-tools" in o for _, o in install_deps_calls(s))]
        if not build_stages:
            self.err(rel, "no build stage runs scripts/install-deps.sh --no-test-tools")
        else:
            builder = build_stages[-1]
            if not any("cmake" in i.value and "Release" in i.value for i in runs(builder)):
                self.err(at(builder.line), "build stage must run a CMake Release build")
        rt_calls = install_deps_calls(final)
        if not any("--runtime-only" in o for _, o in rt_calls):
            self.err(at(final.line), "runtime stage must install with scripts/install-deps.sh --runtime-only")

        # COPY sources and stages.
        seen = set()
        for s in stages:
            for i in s.all("ADD"):
                if not re.match(r"\s*(--\S+\s+)*(https?://|git@)", i.value):
                    self.err(at(i.line), "ADD of a local file: use COPY (DL3020)")
            for i in s.all("COPY"):
                toks = shlex.split(i.value)
                flags = [t for t in toks if t.startswith("--")]
                paths = [t for t in toks if not t.startswith("--")]
                frm = [f.split("=", 1)[1] for f in flags if f.startswith("--from=")]
                if frm:
                    if frm[0] not in seen:
                        self.err(at(i.line), "COPY --from=%s names no earlier stage" % frm[0])
                    continue
                for p in paths[:-1]:
                    p = p.rstrip("/") or "."
                    if p == ".":
                        continue
                    if not os.path.exists(os.path.join(self.src, p)):
                        self.err(at(i.line), "COPY source '%s' does not exist" % p)
                    elif not in_context(self.ignore, p):
                        self.err(at(i.line), "COPY source '%s' is excluded by .dockerignore" % p)
            if s.name:
                seen.add(s.name)

        # Programs installed from the build.
        installed = set()
        for i in runs(builder) if builder else []:
            m = re.search(r"for b in ([^;]+);", i.value)
            if m:
                installed.update(m.group(1).split())
            installed.update(re.findall(r"/build/bin/([\w.+-]+)", i.value))
        installed.discard("${b}")
        targets = self.cmake_targets()
        for b in sorted(installed):
            if b not in targets:
                self.err(rel, "installs '%s', which no CMakeLists.txt add_executable()s" % b)
        for b in ("eqsim-server", "eqsim"):
            if b not in installed:
                self.err(rel, "the image must contain %s" % b)

        # Runtime stage.
        ports = self.server_defaults()
        users = final.all("USER")
        if not users:
            self.err(at(final.line), "runtime stage sets no USER: it would run as root (DL3002)")
        else:
            u = users[-1]
            user = u.value.split(":")[0]
            if user in ("root", "0") or user != NON_ROOT_UID:
                self.err(at(u.line), "USER must be the non-root uid %s, got '%s'" % (NON_ROOT_UID, u.value))
            later_runs = [i for i in final.instructions if i.keyword == "RUN" and i.line > u.line]
            if later_runs:
                self.err(at(later_runs[0].line), "RUN after USER %s: install as root first" % u.value)
        if not any(re.search(r"useradd\b.*--uid\s+%s\b" % NON_ROOT_UID, i.value, re.S) for i in runs(final)):
            self.err(at(final.line), "runtime stage must create the user with uid %s" % NON_ROOT_UID)
        if not any(re.search(r"chown\s+%s(:%s)?\s+[^\n]*?/state\b" % (NON_ROOT_UID, NON_ROOT_UID), i.value)
                   for i in runs(final)):
            self.err(at(final.line), "/state must be owned by uid %s (the server writes it)" % NON_ROOT_UID)
        vols = set()
        for i in final.all("VOLUME"):
            vols.update(i.json_args() or i.value.split())
        if not VOLUMES <= vols:
            self.err(at(final.line), "VOLUME must declare %s, got %s" % (sorted(VOLUMES), sorted(vols)))
        exposed = set()
        for i in final.all("EXPOSE"):
            exposed.update(int(p.split("/")[0]) for p in i.value.split())
        want = {ports["port"], ports["metrics_port"]}
        if exposed != want:
            self.err(at(final.line), "EXPOSE %s must equal the server's default --port and "
                     "--metrics_port %s" % (sorted(exposed), sorted(want)))

        ep = final.all("ENTRYPOINT")
        cmd = final.all("CMD")
        ep_args = ep[-1].json_args() if ep else None
        if not ep_args:
            self.err(rel, "ENTRYPOINT must be exec form (JSON): SIGTERM must reach eqsim-server (DL3025)")
            ep_args = []
        elif ep_args[0] != "eqsim-server":
            self.err(at(ep[-1].line), "ENTRYPOINT must run eqsim-server")
        cmd_args = cmd[-1].json_args() if cmd else []
        if cmd and cmd_args is None:
            self.err(at(cmd[-1].line), "CMD must be exec form (JSON) (DL3025)")
            cmd_args = []
        cmd_args = ep_args[1:] + cmd_args  # what the server gets by default
        where = at((cmd or ep)[-1].line) if (cmd or ep) else rel
        cmd_flags = dict(a[2:].split("=", 1) for a in cmd_args if a.startswith("--") and "=" in a)
        for flag, vol in (("model_repository", "/models"), ("data_root", "/data"), ("state_dir", "/state")):
            if cmd_flags.get(flag) != vol:
                self.err(where, "ENTRYPOINT/CMD must pass --%s=%s (the VOLUME)" % (flag, vol))
        for flag in ("port", "metrics_port"):
            if flag in cmd_flags and int(cmd_flags[flag]) not in exposed:
                self.err(where, "--%s=%s is not an EXPOSEd port" % (flag, cmd_flags[flag]))
        grpc_port = int(cmd_flags.get("port", ports["port"]))

        hc = final.all("HEALTHCHECK")
        health_argv = None
        if not hc:
            self.err(at(final.line), "runtime stage has no HEALTHCHECK")
        else:
            h = hc[-1]
            m = re.search(r"\bCMD\s+(.*)$", h.value, re.S)
            health_argv = json.loads(m.group(1)) if m and m.group(1).strip().startswith("[") else None
            if not health_argv:
                self.err(at(h.line), "HEALTHCHECK must use an exec-form CMD")
            else:
                if health_argv[0] not in installed:
                    self.err(at(h.line), "HEALTHCHECK runs '%s', which the image does not contain" % health_argv[0])
                if not any(a.endswith(":%d" % grpc_port) for a in health_argv):
                    self.err(at(h.line), "HEALTHCHECK does not probe the gRPC port %d" % grpc_port)
            if "--start-period" not in h.value:
                self.err(at(h.line), "HEALTHCHECK needs a --start-period (model loading and warm-up)")

        self.lint(rel, stages, at)
        return {"installed": installed, "cmd": cmd_args, "health": health_argv, "builder": builder,
                "exposed": exposed, "volumes": vols | {"/tmp"}}

    def lint(self, rel, stages, at):
        shellcheck = shutil.which("shellcheck")
        if not shellcheck:
            self.notes.append("shellcheck not installed: RUN scripts not linted")
        for s in stages:
            shell = None
            for i in s.instructions:
                if i.keyword == "SHELL":
                    shell = i.json_args()
                if i.keyword == "WORKDIR" and not i.value.startswith("/"):
                    self.err(at(i.line), "WORKDIR must be absolute (DL3000)")
                if i.keyword != "RUN" or i.json_args() is not None:
                    continue
                v = i.value
                if "|" in v.replace("||", "") and not (shell and "pipefail" in shell):
                    self.err(at(i.line), "RUN with a pipe needs SHELL [..., \"-o\", \"pipefail\", ...] (DL4006)")
                if re.search(r"apt-get\s+(update|install)", v) and "rm -rf /var/lib/apt/lists" not in v:
                    self.err(at(i.line), "apt-get without removing /var/lib/apt/lists in the same RUN (DL3009)")
                if re.search(r"apt-get\s+install", v) and "--no-install-recommends" not in v:
                    self.err(at(i.line), "apt-get install without --no-install-recommends (DL3015)")
                if re.search(r"\bsudo\b", v):
                    self.err(at(i.line), "sudo in a RUN (DL3004)")
                if shellcheck:
                    script = "#!/bin/bash\nset -o pipefail\n" + i.raw + "\n"
                    p = subprocess.run([shellcheck, "-s", "bash", "-f", "gcc", "-e", "SC2154", "-"],
                                       input=script, capture_output=True, text=True)
                    if p.returncode != 0:
                        for line in p.stdout.strip().split("\n"):
                            m = re.match(r"-:(\d+):\d+: (.*)", line)
                            if m:
                                self.err(at(i.line + int(m.group(1)) - 3), "shellcheck: " + m.group(2))

    def check_compose(self, info):
        """docker/compose.yaml: builds the image, maps its ports and volumes, stays locked down."""
        rel = "docker/compose.yaml"
        path = os.path.join(self.src, rel)
        if not os.path.exists(path) or not info:
            return
        try:
            import yaml  # python3-yaml comes with yamllint
        except ImportError:
            self.notes.append("python3-yaml missing: %s not checked" % rel)
            return
        doc = yaml.safe_load(open(path, encoding="utf-8"))
        services = doc.get("services") or {}
        server = services.get("server")
        if not server:
            self.err(rel, "no 'server' service")
            return
        build = server.get("build") or {}
        dockerfile = os.path.normpath(os.path.join(os.path.dirname(path), build.get("context", "."),
                                                   build.get("dockerfile", "Dockerfile")))
        if os.path.relpath(dockerfile, self.src) != DOCKERFILES[0]:
            self.err(rel, "server must build %s, not %s" % (DOCKERFILES[0], os.path.relpath(dockerfile, self.src)))
        container_ports = {int(str(p).split(":")[-1].split("/")[0]) for p in server.get("ports", [])}
        if container_ports != info["exposed"]:
            self.err(rel, "server ports %s must map the EXPOSEd ports %s" % (sorted(container_ports), sorted(info["exposed"])))
        flags = dict(a[2:].split("=", 1) for a in (server.get("command") or []) if a.startswith("--") and "=" in a)
        for flag in ("port", "metrics_port"):
            if flag in flags and int(flags[flag]) not in info["exposed"]:
                self.err(rel, "server --%s=%s is not an EXPOSEd port" % (flag, flags[flag]))
        for name, svc in services.items():
            where = "%s: service '%s'" % (rel, name)
            for v in svc.get("volumes", []):
                target = str(v).split(":")[1] if ":" in str(v) else str(v)
                if target not in info["volumes"]:
                    self.err(where, "mounts %s, which is not a VOLUME of the image %s" % (target, sorted(info["volumes"])))
            if svc.get("read_only") is not True:
                self.err(where, "read_only: true (the image needs no writable root filesystem)")
            if "ALL" not in (svc.get("cap_drop") or []):
                self.err(where, "cap_drop: [ALL]")
            if str(svc.get("user", NON_ROOT_UID)).split(":")[0] in ("0", "root"):
                self.err(where, "runs as root")
            ep = svc.get("entrypoint")
            if ep and ep[0] not in info["installed"]:
                self.err(where, "entrypoint %s is not a program of the image" % ep[0])
        grace = str(server.get("stop_grace_period", "10s"))
        secs = float(grace[:-1]) * (60 if grace.endswith("m") else 1) if grace[-1] in "sm" else float(grace)
        if secs <= 30:
            self.err(rel, "server stop_grace_period %s must exceed the server's --drain_timeout_s (30 s)" % grace)
        self.compose_flags = {n: [a for a in (s.get("command") or []) if a.startswith("--")]
                              for n, s in services.items()}

    def check_pair(self, infos):
        a, b = infos
        if a and b and a["installed"] != b["installed"]:
            self.err(DOCKERFILES[1], "installs %s, docker/Dockerfile installs %s: keep them equal"
                     % (sorted(b["installed"]), sorted(a["installed"])))
        if a and b and a["cmd"] != b["cmd"]:
            self.err(DOCKERFILES[1], "ENTRYPOINT/CMD differ from docker/Dockerfile's")

    def check_binaries(self, info):
        if not info or not self.bin_dir:
            return
        server = os.path.join(self.bin_dir, "eqsim-server")
        if os.path.exists(server):
            p = subprocess.run([server, "--helpfull"], capture_output=True, text=True, timeout=60)
            known = set(re.findall(r"^\s+--(\w+)\s", p.stdout + p.stderr, re.M))
            for a in info["cmd"]:
                name = a[2:].split("=")[0]
                if known and name not in known:
                    self.err(DOCKERFILES[0], "ENTRYPOINT/CMD pass --%s, which eqsim-server does not define" % name)
            # absl parses every flag, names and values, before --version prints and exits 0.
            p = subprocess.run([server] + info["cmd"] + ["--version"], capture_output=True, text=True, timeout=60)
            if p.returncode != 0:
                self.err(DOCKERFILES[0], "eqsim-server does not accept the image's ENTRYPOINT/CMD: %s"
                         % (p.stderr.strip().split("\n") or [""])[0])
            for a in getattr(self, "compose_flags", {}).get("server", []):
                name = a[2:].split("=")[0]
                if known and name not in known:
                    self.err("docker/compose.yaml", "server passes --%s, which eqsim-server does not define" % name)
        else:
            self.notes.append("eqsim-server not built: CMD flags not checked")
        h = info["health"]
        cli = os.path.join(self.bin_dir, h[0]) if h else None
        if cli and os.path.exists(cli):
            # Nothing listens on port 1: a working probe reports failure (1), a missing
            # subcommand or flag is a usage error (2).
            argv = [cli] + [re.sub(r":\d+$", ":1", a) for a in h[1:]]
            try:
                p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
                rc, out = p.returncode, (p.stdout + p.stderr).strip()
            except subprocess.TimeoutExpired:
                rc, out = None, "timed out after 60 s"
            if rc != 1:
                self.err(DOCKERFILES[0], "HEALTHCHECK command %s against a closed port: exit %s, "
                         "expected 1 (not serving): %s" % (" ".join(argv), rc, out.split("\n")[0][:200]))
        elif h:
            self.notes.append("%s not built: HEALTHCHECK command not run" % h[0])

    def check_configure(self, info):
        """Configures the build context alone, as the builder stage does."""
        tmp = tempfile.mkdtemp(prefix="eqsim-docker-ctx-")
        try:
            git = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                                 cwd=self.src, capture_output=True, text=True)
            if git.returncode == 0:
                files = git.stdout.split()
            else:  # not a git checkout (e.g. an unpacked tarball): every file
                files = []
                for root, dirs, names in os.walk(self.src, followlinks=True):
                    dirs[:] = [d for d in dirs if not d.startswith(("build", ".")) and d != "node_modules"]
                    files += [os.path.relpath(os.path.join(root, n), self.src) for n in names]
            n = 0
            for f in files:
                if in_context(self.ignore, f) and os.path.isfile(os.path.join(self.src, f)):
                    os.makedirs(os.path.join(tmp, "src", os.path.dirname(f)), exist_ok=True)
                    shutil.copy2(os.path.join(self.src, f), os.path.join(tmp, "src", f))
                    n += 1
            for f in ("tests/CMakeLists.txt", "bench/CMakeLists.txt", "docker/Dockerfile"):
                if in_context(self.ignore, f):
                    self.err(".dockerignore", "%s is in the build context: the image build does not need it" % f)
            cmd = ["cmake", "-S", os.path.join(tmp, "src"), "-B", os.path.join(tmp, "build"), "-G", "Ninja",
                   "-DCMAKE_BUILD_TYPE=Release", "-DEQSIM_BUILD_TESTS=OFF", "-DEQSIM_BUILD_BENCHMARKS=OFF"]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                errs = [l for l in (p.stdout + p.stderr).split("\n") if l.strip()][-12:]
                self.err(".dockerignore", "the build context (%d files) does not configure:\n    %s"
                         % (n, "\n    ".join(errs)))
            else:
                print("build context: %d files, CMake configure OK" % n, file=sys.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def run(src, bin_dir, configure, binaries=True, binaries_only=False):
    c = Checker(src, bin_dir)
    infos = [c.check_file(f) for f in DOCKERFILES]
    c.check_pair(infos)
    c.check_compose(infos[0])
    if binaries_only:
        c.errors = []
    if binaries or binaries_only:
        c.check_binaries(infos[0])
    if configure:
        c.check_configure(infos[0])
    return c


# Known mistakes, applied to copies of the Dockerfiles: each must be reported.
MUTATIONS = [
    ("runs as root", "USER 10001:10001\n", "USER root\n", "USER must be the non-root uid"),
    ("no USER", "USER 10001:10001\n", "", "sets no USER"),
    ("wrong EXPOSE", "EXPOSE 8500 8502", "EXPOSE 8500 9090", "EXPOSE"),
    ("no HEALTHCHECK", "HEALTHCHECK", "# HEALTHCHECK", "no HEALTHCHECK"),
    ("shell-form ENTRYPOINT", 'ENTRYPOINT ["eqsim-server", ', "ENTRYPOINT eqsim-server [", "exec form"),
    ("state not on the volume", '"--state_dir=/state"', '"--state_dir=/var/lib/eqsim"', "--state_dir=/state"),
    ("unknown install-deps option", "--runtime-only", "--runtime", "--runtime-only"),
    ("program that is no target", "eqsim-train eqsim-eval", "eqsim-train eqsim-evaluate", "add_executable"),
    ("unpinned base", "ARG DEBIAN_IMAGE=debian:12", "ARG DEBIAN_IMAGE=debian:latest", "latest"),
    ("COPY from a missing stage", "COPY --from=builder", "COPY --from=build", "names no earlier stage"),
    ("shell bug in RUN", 'if [ "${jobs}" = 0 ]', 'if [ "${jobs}" = 0 ', "shellcheck"),
    ("compose port the image does not expose", "EXPOSE 8500 8502", "EXPOSE 8500 8503", "must map the EXPOSEd ports"),
]


def self_test(src):
    failures = []
    for what, old, new, expect in MUTATIONS:
        tmp = tempfile.mkdtemp(prefix="eqsim-docker-st-")
        try:
            for d in ("docker", "scripts", "server"):
                if os.path.isdir(os.path.join(src, d)):
                    shutil.copytree(os.path.join(src, d), os.path.join(tmp, d))
            shutil.copy2(os.path.join(src, ".dockerignore"), tmp)
            for root, _, files in os.walk(src):
                if any(part.startswith(("build", ".", "node_modules")) for part in
                       os.path.relpath(root, src).split(os.sep) if part != "."):
                    continue
                if "CMakeLists.txt" in files:
                    dst = os.path.join(tmp, os.path.relpath(root, src))
                    os.makedirs(dst, exist_ok=True)
                    shutil.copy2(os.path.join(root, "CMakeLists.txt"), dst)
            f = os.path.join(tmp, DOCKERFILES[0])
            text = open(f, encoding="utf-8").read()
            if old not in text:
                failures.append("self-test '%s': docker/Dockerfile no longer contains %r" % (what, old))
                continue
            open(f, "w", encoding="utf-8").write(text.replace(old, new, 1))
            errs = run(tmp, None, False).errors
            if not any(expect in e for e in errs):
                failures.append("self-test '%s': not reported (expected '%s'; got %s)" % (what, expect, errs[:2]))
            else:
                print("  caught: %s: %s" % (what, next(e for e in errs if expect in e)), file=sys.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source-dir", required=True)
    ap.add_argument("--bin-dir", default=os.environ.get("EQSIM_BIN_DIR"))
    ap.add_argument("--configure", action="store_true")
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--binaries-only", action="store_true")
    ap.add_argument("--no-binaries", action="store_true", help="skip the checks against built binaries")
    a = ap.parse_args()
    src = os.path.abspath(a.source_dir)
    if a.binaries_only:
        built = a.bin_dir and any(os.path.exists(os.path.join(a.bin_dir, b)) for b in ("eqsim-server", "eqsim"))
        if not built:
            print("SKIP: neither eqsim-server nor eqsim is built in %s" % a.bin_dir, file=sys.stderr)
            return 77
    c = run(src, a.bin_dir, a.configure, binaries=not a.no_binaries, binaries_only=a.binaries_only)
    failures = self_test(src) if a.self_test else []
    for n in c.notes:
        print("note: " + n, file=sys.stderr)
    for e in c.errors + failures:
        print("ERROR " + e, file=sys.stderr)
    bad = len(c.errors) + len(failures)
    print("%d Dockerfiles checked: %s" % (len(DOCKERFILES), "OK" if bad == 0 else "%d error(s)" % bad))
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
