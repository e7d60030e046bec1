#!/usr/bin/env python3
"""Merges the shard results of the sharded evaluation Job into one result.

Each shard file is the `eqsim eval-local --json` output for a slice of the benchmark's samples
(shard-<i>.json, i = 0..N-1). Scores are fractions of correct samples, so the merged score of
a subset is sum(score_i * samples_i) / sum(samples_i), exactly; skipped samples add up. The
output has the same layout as one eval-local result (subsets, overall, shards).

  kubectl -n eqsim cp <a pod that mounts eqsim-state>:/state/eval-results/kubric-loc kubric-loc
  python3 deploy/jobs/eval-sharded/merge_shards.py --shards 4 kubric-loc > kubric-loc.json

Exit 0 merged, 1 a shard is missing or inconsistent, 2 usage.
"""
import argparse
import json
import os
import sys

SCORES = ("text_score", "image_score", "group_score", "pairwise_accuracy")


class MergeError(Exception):
    pass


def load_shards(folder, num_shards):
    shards = []
    for i in range(num_shards):
        path = os.path.join(folder, "shard-%d.json" % i)
        if not os.path.exists(path):
            raise MergeError("%s: missing (shard %d of %d has not finished)" % (path, i, num_shards))
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except ValueError as e:
            raise MergeError("%s: not valid JSON: %s" % (path, e))
        if not isinstance(data, dict) or not isinstance(data.get("subsets"), list):
            raise MergeError("%s: not an eval-local --json result (no 'subsets' list)" % path)
        shards.append((path, data))
    extra = sorted(f for f in os.listdir(folder) if f.startswith("shard-") and f.endswith(".json")
                   and f not in {"shard-%d.json" % i for i in range(num_shards)})
    if extra:
        raise MergeError("%s: unexpected %s: was the Job run with more shards?" % (folder, ", ".join(extra)))
    return shards


def merge(shards):
    first_path, first = shards[0]
    fmt, model = first.get("format"), (first.get("model"), first.get("version"))
    subsets, order = {}, []
    for path, data in shards:
        if data.get("format") != fmt:
            raise MergeError("%s: format '%s' differs from %s's '%s'" % (path, data.get("format"), first_path, fmt))
        if (data.get("model"), data.get("version")) != model:
            raise MergeError("%s: model %s v%s differs from %s's %s v%s" % (
                path, data.get("model"), data.get("version"), first_path, model[0], model[1]))
        for k, s in enumerate(data["subsets"]):
            name = s.get("subset")
            if not isinstance(s.get("samples"), int) or s["samples"] < 0:
                raise MergeError("%s: subsets[%d] ('%s'): 'samples' must be a count" % (path, k, name))
            acc = subsets.get(name)
            if acc is None:
                acc = subsets[name] = {"subset": name, "samples": 0, "skipped": 0, "correct": {}}
                order.append(name)
            acc["samples"] += s["samples"]
            acc["skipped"] += int(s.get("skipped", 0))
            for key in SCORES:
                if key in s:
                    # score * samples is an integer count of correct samples.
                    acc["correct"][key] = acc["correct"].get(key, 0) + round(s[key] * s["samples"])

    def finish(acc):
        out = {"subset": acc["subset"], "samples": acc["samples"], "skipped": acc["skipped"]}
        for key in SCORES:
            if key in acc["correct"]:
                out[key] = acc["correct"][key] / acc["samples"] if acc["samples"] else 0.0
        return out

    overall = {"subset": "overall", "samples": 0, "skipped": 0, "correct": {}}
    for name in order:
        acc = subsets[name]
        overall["samples"] += acc["samples"]
        overall["skipped"] += acc["skipped"]
        for key, v in acc["correct"].items():
            overall["correct"][key] = overall["correct"].get(key, 0) + v
    return {
        "format": fmt,
        "model": model[0],
        "version": model[1],
        "shards": len(shards),
        "subsets": [finish(subsets[n]) for n in order],
        "overall": finish(overall),
        "images_embedded": sum(int(d.get("images_embedded", 0)) for _, d in shards),
        "texts_embedded": sum(int(d.get("texts_embedded", 0)) for _, d in shards),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", help="folder holding shard-0.json .. shard-<N-1>.json")
    ap.add_argument("--shards", type=int, required=True, help="number of shards (NUM_SHARDS)")
    a = ap.parse_args(argv)
    if a.shards < 1:
        ap.error("--shards must be at least 1")
    if not os.path.isdir(a.folder):
        ap.error("%s is not a folder" % a.folder)
    try:
        result = merge(load_shards(a.folder, a.shards))
    except MergeError as e:
        print("merge_shards: %s" % e, file=sys.stderr)
        return 1
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
