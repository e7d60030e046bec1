#!/usr/bin/python3
"""ctest deploy_runtime_deps: the runtime image's package list is complete.

docker/Dockerfile's runtime stage installs only `scripts/install-deps.sh --runtime-only`. This
runs `ldd` on the built programs that the image ships, maps every shared library to its Debian
package (dpkg -S) and checks that each package is installed by that list, directly or as a
dependency (the Depends/Pre-Depends closure over the installed packages' metadata), or is part
of the debian:12 base image (Essential / Priority required). It also fails on a library that
ldd cannot find. Programs not built yet are reported and skipped; with none built the test is
skipped (exit 77).
Usage: runtime_deps_test.py --source-dir DIR --bin-dir DIR
"""
import argparse
import os
import re
import subprocess
import sys

PROGRAMS = ("eqsim-server", "eqsim", "eqsim-train", "eqsim-eval")
# Runtime packages that are data or certificates rather than libraries.
NOT_LIBRARIES = {"ca-certificates", "dataset-fashion-mnist"}


def runtime_packages(src):
    text = open(os.path.join(src, "scripts/install-deps.sh"), encoding="utf-8").read()
    m = re.search(r"^runtime_pkgs=\((.*?)\)", text, re.S | re.M)
    if not m:
        raise SystemExit("scripts/install-deps.sh: no runtime_pkgs=( ... ) list")
    body = re.sub(r"#.*", "", m.group(1))
    return body.split()


def installed_packages():
    fmt = "${Package}\\t${Status}\\t${Essential}\\t${Priority}\\t${Depends}\\t${Pre-Depends}\\t${Provides}\\n"
    out = subprocess.run(["dpkg-query", "-W", "-f", fmt], capture_output=True, text=True, check=True).stdout
    pkgs, provides = {}, {}
    for line in out.splitlines():
        f = line.split("\t")
        if len(f) < 7 or "install ok installed" not in f[1]:
            continue
        name = f[0]
        deps = []
        for field in (f[4], f[5]):
            for group in filter(None, (g.strip() for g in field.split(","))):
                alts = [re.sub(r"[\s(].*", "", a.strip()).split(":")[0] for a in group.split("|")]
                deps.append(alts)
        pkgs[name] = {"essential": f[2] == "yes", "required": f[3] == "required", "deps": deps}
        for p in filter(None, (x.strip() for x in f[6].split(","))):
            provides.setdefault(re.sub(r"[\s(].*", "", p), []).append(name)
    return pkgs, provides


def closure(roots, pkgs, provides):
    seen, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        for alts in pkgs.get(p, {}).get("deps", []):
            pick = None
            for a in alts:
                if a in pkgs:
                    pick = a
                    break
                if a in provides:
                    pick = provides[a][0]
                    break
            if pick:
                todo.append(pick)
    return seen


_OWNERS = None


def owner(path):
    """The package that installed `path` (from dpkg's file lists, read once)."""
    global _OWNERS
    if _OWNERS is None:
        _OWNERS = {}
        info = "/var/lib/dpkg/info"
        for f in os.listdir(info):
            if not f.endswith(".list"):
                continue
            pkg = f[:-len(".list")].split(":")[0]
            with open(os.path.join(info, f), encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if ".so" in line:
                        _OWNERS.setdefault(line.rstrip("\n"), pkg)
    cands = [path, os.path.realpath(path)]
    for c in list(cands):
        if c.startswith("/usr/lib/"):
            cands.append(c[len("/usr"):])
        elif c.startswith("/lib/"):
            cands.append("/usr" + c)
    for c in cands:
        if c in _OWNERS:
            return _OWNERS[c]
    return None


def ldd(path):
    """[(library, resolved path or 'not found')] of a program."""
    out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    return [(m.group(1), m.group(2)) for m in
            (re.match(r"\s*(\S+)\s+=>\s+(not found|\S+)", l) for l in out.splitlines()) if m]


def check(libs, runtime, pkgs, provides):
    base = [p for p, v in pkgs.items() if v["essential"] or v["required"]]
    have = closure(list(runtime) + base, pkgs, provides)
    per_root = {r: closure([r], pkgs, provides) for r in runtime}
    errors, used = [], set()
    for prog, entries in libs.items():
        for lib, where in entries:
            if where == "not found":
                errors.append("%s: %s not found by ldd" % (prog, lib))
                continue
            pkg = owner(where)
            if pkg is None:
                errors.append("%s: %s (%s) belongs to no Debian package: the image cannot have it"
                              % (prog, lib, where))
                continue
            if pkg not in have:
                errors.append("%s: %s comes from package %s, which install-deps.sh --runtime-only "
                              "does not install (add it to runtime_pkgs)" % (prog, lib, pkg))
            used.update(r for r in runtime if pkg in per_root[r])
    return errors, used


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source-dir", required=True)
    ap.add_argument("--bin-dir", default=os.environ.get("EQSIM_BIN_DIR"))
    a = ap.parse_args()
    if not a.bin_dir:
        print("SKIP: no --bin-dir", file=sys.stderr)
        return 77
    runtime = runtime_packages(a.source_dir)
    pkgs, provides = installed_packages()
    missing_here = [p for p in runtime if p not in pkgs]
    if missing_here:
        print("FAIL: runtime packages not installed on this machine (run scripts/install-deps.sh): %s"
              % " ".join(missing_here), file=sys.stderr)
        return 1
    built = [p for p in PROGRAMS if os.path.exists(os.path.join(a.bin_dir, p))]
    for prog in PROGRAMS:
        if prog not in built:
            print("note: %s is not built: not checked" % prog, file=sys.stderr)
    libs = {p: ldd(os.path.join(a.bin_dir, p)) for p in built}
    errors, used = check(libs, runtime, pkgs, provides)
    for prog in built:
        bad = any(e.startswith(prog + ":") for e in errors)
        print("%s: %d shared libraries%s" % (prog, len(libs[prog]),
              " - NOT all from runtime packages" if bad else ", all from runtime packages"), file=sys.stderr)
    checked = len(built)
    if built:
        # Self-test: with an empty runtime list the libraries beyond the base image must show up.
        st, _ = check(libs, [], pkgs, provides)
        if not st:
            errors.append("self-test: an empty runtime package list was not reported")
        else:
            print("self-test: an empty runtime list is reported (%d errors, e.g. %s)" % (len(st), st[0]),
                  file=sys.stderr)
    if checked == 0:
        print("SKIP: none of %s is built in %s" % (", ".join(PROGRAMS), a.bin_dir), file=sys.stderr)
        return 77
    unused = [p for p in runtime if p not in used and p not in NOT_LIBRARIES]
    if unused and checked == len(PROGRAMS):
        print("note: runtime packages no built program links: %s" % " ".join(unused), file=sys.stderr)
    for e in errors:
        print("ERROR " + e, file=sys.stderr)
    print("%d programs checked against %d runtime packages: %s" % (
        checked, len(runtime), "OK" if not errors else "%d error(s)" % len(errors)))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
