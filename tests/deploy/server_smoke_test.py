#!/usr/bin/python3
"""ctest deploy_server_smoke: the server configuration of deploy/ actually serves.

With the built programs, on loopback:
  1. trains a tiny model with eqsim-train the way deploy/jobs/train does (--data=fashion-mnist,
     --repository, --model_name, --resume with a checkpoint folder), into a temporary repository;
  2. starts eqsim-server with the flag files rendered from deploy/overlays/cpu (the ConfigMap's
     base.flags and overlay.flags through --flagfile, as the Deployment does) plus --state_dir
     as the Deployment sets it; only ports and volume paths are moved to free ports and temporary
     folders;
  3. waits until `eqsim models` reports the model READY, embeds a caption through the CLI,
     and reads /metrics: eqsim_queue_depth, the metric the HPA scales on through the Prometheus
     adapter (deploy/prometheus-adapter), must be exported;
  4. sends SIGTERM (what the kubelet sends after the preStop hook) and expects exit code 0.
Skipped (77) when eqsim-server, eqsim-train or eqsim is not built.
Usage: server_smoke_test.py --source-dir DIR --bin-dir DIR
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

try:
    import yaml
except ImportError:  # python3-yaml comes with yamllint
    yaml = None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rendered_flag_files(src, overlay):
    out = subprocess.run(["kubectl", "kustomize", os.path.join(src, "deploy", overlay)],
                         capture_output=True, text=True, check=True).stdout
    for doc in yaml.safe_load_all(out):
        if doc and doc.get("kind") == "ConfigMap" and doc["metadata"]["name"].startswith("eqsim-server-flags"):
            return doc["data"]
    raise SystemExit("FAIL: %s renders no eqsim-server-flags ConfigMap" % overlay)


def deployment_args(src, overlay):
    out = subprocess.run(["kubectl", "kustomize", os.path.join(src, "deploy", overlay)],
                         capture_output=True, text=True, check=True).stdout
    for doc in yaml.safe_load_all(out):
        if doc and doc.get("kind") == "Deployment":
            return doc["spec"]["template"]["spec"]["containers"][0]["args"]
    raise SystemExit("FAIL: %s renders no Deployment" % overlay)


def argv_base(args, files, state):
    argv = []
    for x in args:
        if x.startswith("--flagfile="):
            argv.append("--flagfile=" + ",".join(files))
        elif x.startswith("--state_dir="):
            argv.append("--state_dir=" + x.split("=", 1)[1].replace("/state", state, 1)
                        .replace("$(POD_NAME)", "eqsim-server-0"))
        else:
            argv.append(x)
    return argv


def serve(a, bins, args, models, data, tmp, with_metrics, failures):
    """Starts the server with the Deployment's args; returns False when it could not start
    because of /metrics (so the caller can retry without it)."""
    port, metrics_port = free_port(), (free_port() if with_metrics else 0)
    # Only where the pod's volumes and ports are: later flags win in absl.
    argv = [bins["eqsim-server"]] + args + [
        "--model_repository=" + models, "--data_root=" + data,
        "--port=%d" % port, "--metrics_port=%d" % metrics_port]
    log = open(os.path.join(tmp, "server-%s.log" % ("metrics" if with_metrics else "nometrics")), "w+")
    server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    target = "--target=127.0.0.1:%d" % port

    def server_log():
        log.seek(0)
        return log.read()[-3000:]

    try:
        deadline = time.time() + a.ready_timeout_s
        ready = False
        while time.time() < deadline and server.poll() is None:
            p = subprocess.run([bins["eqsim"], "models", target, "--json", "--timeout=5s"],
                               capture_output=True, text=True)
            if p.returncode == 0 and '"READY"' in p.stdout:
                ready = True
                break
            time.sleep(1)
        if not ready:
            text = server_log()
            if "CivetServer" in text:
                text += (" [a prometheus-cpp Exposer fails like this in any process that loads "
                         "Debian's libtorch_cpu.so.1.13, e.g. a 5-line program linking "
                         "prometheus-cpp-pull and torch_cpu: /metrics needs another HTTP server]")
            failures.append("the server never reported the model READY (exit %s)%s: %s" % (
                server.poll(), " with --metrics_port=%d" % metrics_port if with_metrics else "", text.strip()))
            return not (with_metrics and "metrics" in text)
        print("server ready with the overlays/cpu flag files: %s" % " ".join(argv[1:]), file=sys.stderr)

        p = subprocess.run([bins["eqsim"], "embed", target, "--text=a red shirt", "--json"],
                           capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            failures.append("eqsim embed exited %d: %s" % (p.returncode, p.stderr.strip()[-500:]))
        else:
            try:
                json.loads(p.stdout)
                print("embedded a caption through the CLI", file=sys.stderr)
            except ValueError:
                failures.append("eqsim embed --json printed no JSON: %s" % p.stdout[:200])

        if with_metrics:
            body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % metrics_port, timeout=10).read().decode()
            names = {l.split("{")[0].split(" ")[0] for l in body.splitlines() if l and not l.startswith("#")}
            for want in ("eqsim_queue_depth", "eqsim_requests_total"):
                if want not in names:
                    failures.append("/metrics has no %s (the HPA / alerts use it); it has: %s"
                                    % (want, sorted(names)[:20]))

        # SIGTERM, as the kubelet sends after the preStop hook: drain and exit 0.
        server.send_signal(signal.SIGTERM)
        try:
            rc = server.wait(timeout=120)
            if rc != 0:
                failures.append("eqsim-server exited %d after SIGTERM, expected 0: %s" % (rc, server_log()))
            else:
                print("SIGTERM: drained and exited 0", file=sys.stderr)
        except subprocess.TimeoutExpired:
            failures.append("eqsim-server did not exit within 120 s of SIGTERM")
        return True
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source-dir", required=True)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--ready-timeout-s", type=float, default=240)
    a = ap.parse_args()
    bins = {b: os.path.join(a.bin_dir, b) for b in ("eqsim-server", "eqsim-train", "eqsim")}
    missing = [b for b, p in bins.items() if not os.path.exists(p)]
    if missing:
        print("SKIP: not built in %s: %s" % (a.bin_dir, ", ".join(missing)), file=sys.stderr)
        return 77
    if yaml is None or subprocess.run(["which", "kubectl"], capture_output=True).returncode != 0:
        print("FAIL: needs python3-yaml and kubectl", file=sys.stderr)
        return 1

    tmp = tempfile.mkdtemp(prefix="eqsim-smoke-")
    models, data, state = (os.path.join(tmp, d) for d in ("models", "data", "state"))
    os.makedirs(data)
    # 1. A tiny model, trained like deploy/jobs/train (fewer steps, smaller towers).
    train = [bins["eqsim-train"], "--data=fashion-mnist", "--repository=" + models,
             "--model_name=fashion-native", "--threads=1", "--checkpoint_dir=" + os.path.join(tmp, "ckpt"),
             "--resume", "--steps=4", "--batch_size=8", "--embed_dim=32", "--image_width=8",
             "--image_stages=2", "--text_width=32", "--text_layers=1", "--text_heads=2",
             "--heldout_scenes=0", "--progress=false", "--json"]
    t0 = time.time()
    p = subprocess.run(train, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        print("FAIL: eqsim-train exited %d: %s" % (p.returncode, p.stderr[-2000:]), file=sys.stderr)
        return 1
    print("trained a tiny model in %.1f s" % (time.time() - t0), file=sys.stderr)

    # 2. The server with the overlay's flag files.
    flags = rendered_flag_files(a.source_dir, "overlays/cpu")
    args = deployment_args(a.source_dir, "overlays/cpu")
    files = []
    for key in ("base.flags", "overlay.flags"):
        path = os.path.join(tmp, key)
        with open(path, "w") as f:
            f.write(flags[key])
        files.append(path)
    if not any(x.startswith("--flagfile=") for x in args):
        print("FAIL: the Deployment passes no --flagfile: %s" % args, file=sys.stderr)
        return 1
    failures = []
    metrics_ok = serve(a, bins, argv_base(args, files, state), models, data, tmp, True, failures)
    if not metrics_ok:
        # Check the rest with /metrics off, so one broken part doesn't hide the others.
        serve(a, bins, argv_base(args, files, state), models, data, tmp, False, failures)
    for f in failures:
        print("ERROR " + f, file=sys.stderr)
    print("server smoke test with deploy/overlays/cpu flags: %s" % ("OK" if not failures else "%d error(s)" % len(failures)))
    subprocess.run(["rm", "-rf", tmp])
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
