#!/usr/bin/python3
"""ctest deploy_merge_shards: deploy/jobs/eval-sharded/merge_shards.py gives exactly the numbers
of an unsharded evaluation, and refuses missing, extra or inconsistent shards.

A benchmark of per-sample outcomes (text / image correct, random but seeded, three subsets of
uneven sizes, some samples skipped) is scored whole and in N contiguous shards the way
`eqsim eval-local --json` reports them (fractions per subset); the merge of the shards must
equal the whole (same counts, same fractions) for several N, including shards that hold no
sample of some subset.
"""
import json
import os
import random
import subprocess
import sys
import tempfile

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOOL = os.path.join(SRC, "deploy", "jobs", "eval-sharded", "merge_shards.py")


def make_benchmark(seed):
    rng = random.Random(seed)
    samples = []
    for subset, n in (("eqbenkubric_loc", 37), ("eqbensd", 11), ("eqbengebc", 52)):
        for _ in range(n):
            skipped = rng.random() < 0.05
            t, i = rng.random() < 0.6, rng.random() < 0.4
            samples.append((subset, skipped, t, i))
    return samples


def score(samples):
    """eval-local --json layout for these samples (subsets in first-seen order)."""
    order, acc = [], {}
    for subset, skipped, t, i in samples:
        if subset not in acc:
            acc[subset] = {"samples": 0, "skipped": 0, "t": 0, "i": 0, "g": 0}
            order.append(subset)
        a = acc[subset]
        if skipped:
            a["skipped"] += 1
            continue
        a["samples"] += 1
        a["t"] += t
        a["i"] += i
        a["g"] += t and i

    def row(name, a):
        n = a["samples"]
        return {"subset": name, "samples": n, "skipped": a["skipped"],
                "text_score": a["t"] / n if n else 0.0, "image_score": a["i"] / n if n else 0.0,
                "group_score": a["g"] / n if n else 0.0}

    total = {k: sum(acc[s][k] for s in order) for k in ("samples", "skipped", "t", "i", "g")}
    return {"format": "eqben-pairs", "model": "fashion-native", "version": 3,
            "subsets": [row(s, acc[s]) for s in order], "overall": row("overall", total),
            "images_embedded": 2 * len(samples), "texts_embedded": 2 * len(samples)}


def run(folder, shards):
    p = subprocess.run([sys.executable, TOOL, folder, "--shards", str(shards)],
                       capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def write_shards(folder, samples, n):
    bounds = [len(samples) * k // n for k in range(n + 1)]
    for k in range(n):
        with open(os.path.join(folder, "shard-%d.json" % k), "w") as f:
            json.dump(score(samples[bounds[k]:bounds[k + 1]]), f)


def main():
    failures = []

    def expect(cond, what):
        if not cond:
            failures.append(what)
        print("%s %s" % ("ok  " if cond else "FAIL", what), file=sys.stderr)

    samples = make_benchmark(7)
    whole = score(samples)
    for n in (1, 2, 3, 4, 7, 16):
        with tempfile.TemporaryDirectory() as d:
            write_shards(d, samples, n)
            rc, out, err = run(d, n)
            expect(rc == 0, "%d shards: exit 0 (%s)" % (n, err.strip()))
            if rc != 0:
                continue
            merged = json.loads(out)
            for key in ("subsets", "overall", "format", "model", "version"):
                expect(merged[key] == whole[key], "%d shards: '%s' equals the unsharded result" % (n, key))
            expect(merged["shards"] == n, "%d shards: reports the shard count" % n)

    with tempfile.TemporaryDirectory() as d:
        write_shards(d, samples, 4)
        os.remove(os.path.join(d, "shard-2.json"))
        rc, _, err = run(d, 4)
        expect(rc == 1 and "shard-2.json: missing" in err, "a missing shard is refused: " + err.strip())
    with tempfile.TemporaryDirectory() as d:
        write_shards(d, samples, 5)
        rc, _, err = run(d, 4)
        expect(rc == 1 and "shard-4.json" in err, "a shard beyond --shards is refused: " + err.strip())
    with tempfile.TemporaryDirectory() as d:
        write_shards(d, samples, 2)
        p = os.path.join(d, "shard-1.json")
        data = json.load(open(p))
        data["version"] = 4
        json.dump(data, open(p, "w"))
        rc, _, err = run(d, 2)
        expect(rc == 1 and "v4 differs" in err, "shards of different model versions are refused: " + err.strip())
    with tempfile.TemporaryDirectory() as d:
        write_shards(d, samples, 2)
        open(os.path.join(d, "shard-0.json"), "w").write('{"subsets": [')
        rc, _, err = run(d, 2)
        expect(rc == 1 and "not valid JSON" in err, "a truncated shard is refused: " + err.strip())

    print("merge_shards: OK" if not failures else "merge_shards: %d failure(s)" % len(failures))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
