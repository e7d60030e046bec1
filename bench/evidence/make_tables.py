#!/usr/bin/python3
"""Results table maker for bench/evidence/run_evidence.sh.

  make_tables.py RESULTS.jsonl            print markdown tables (mean +- std over seeds)
  make_tables.py --record ID NAME GROUP SEED FLAGS WALL_S LOGDIR
                                          print one JSON record built from the run's logs
"""
import json
import math
import os
import sys

SUBSETS = ["location", "attribute", "counting", "object", "overall"]
TERMS = ["itc", "eqsim_text", "eqsim_image", "eqsim_v1", "eqsim_group", "eqsim_pos_reg"]


def record(run_id, name, group, seed, flags, wall_s, logdir):
    with open(os.path.join(logdir, run_id + ".train.json")) as f:
        train = json.load(f)
    with open(os.path.join(logdir, run_id + ".eval.json")) as f:
        ev = json.load(f)
    steps = []
    with open(os.path.join(logdir, run_id + ".metrics.jsonl")) as f:
        for line in f:
            line = line.strip()
            if line:
                m = json.loads(line)
                if m.get("type") == "train":
                    steps.append(m)
    # Mean of each logged loss term over all logged steps and over the second half of training
    # (the logged values are already weighted and hinged, i.e. what enters the total loss).
    half = steps[len(steps) // 2:]
    mean = lambda rows, k: sum(r.get(k, 0.0) for r in rows) / max(1, len(rows))
    res = ev["result"]
    scores = {s["subset"]: {"text": s["text_score"], "image": s["image_score"],
                            "group": s["group_score"]} for s in res["subsets"]}
    o = res["overall"]
    scores["overall"] = {"text": o["text_score"], "image": o["image_score"],
                         "group": o["group_score"]}
    return {
        "run": run_id, "config": name, "group": group, "seed": int(seed), "flags": flags,
        "steps": train["steps"], "train_s": round(train["seconds"], 1),
        "wall_s": round(float(wall_s), 1),
        "heldout_i2t_r1": train["heldout"]["i2t_r1"], "heldout_t2i_r1": train["heldout"]["t2i_r1"],
        "final_loss": train["loss"],
        "terms_mean": {k: mean(steps, k) for k in TERMS},
        "terms_mean_2nd_half": {k: mean(half, k) for k in TERMS},
        "scores": scores,
        "eval_samples": ev["samples"],
    }


def ms(xs, scale=100.0, digits=1):
    xs = [x * scale for x in xs]
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return f"{m:.{digits}f}"
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def tables(path):
    recs = [json.loads(l) for l in open(path) if l.strip()]
    by = {}
    for r in recs:
        by.setdefault(r["config"], []).append(r)
    order = []
    for r in recs:
        if r["config"] not in order:
            order.append(r["config"])
    for rs in by.values():
        rs.sort(key=lambda r: r["seed"])

    main = [c for c in order if by[c][0]["group"] == "main"]
    if main:
        print("### Main table: baseline vs released EqSim recipe "
              "(score in %, mean ± sample std over seeds)\n")
        print("| subset | config | seeds | text | image | group |")
        print("|---|---|---|---|---|---|")
        for sub in SUBSETS:
            for c in main:
                rs = by[c]
                seeds = ",".join(str(r["seed"]) for r in rs)
                cells = [ms([r["scores"][sub][k] for r in rs]) for k in ("text", "image", "group")]
                name = f"**{sub}**" if sub == "overall" else sub
                print(f"| {name} | {c} | {seeds} | " + " | ".join(cells) + " |")
        print()
        print("| config | held-out i2t R@1 | held-out t2i R@1 | train s/run |")
        print("|---|---|---|---|")
        for c in main:
            rs = by[c]
            print(f"| {c} | {ms([r['heldout_i2t_r1'] for r in rs])} | "
                  f"{ms([r['heldout_t2i_r1'] for r in rs])} | "
                  f"{ms([r['train_s'] for r in rs], 1.0, 0)} |")
        print()

    print("### All configurations (overall text/image/group and group per subset, %, "
          "mean ± std over the listed seeds)\n")
    print("| config | flags | seeds | text | image | group | loc | attr | cnt | obj "
          "| R@1 i2t/t2i | mean eqsim_text / image / v1 (2nd half) | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c in order:
        rs = by[c]
        seeds = ",".join(str(r["seed"]) for r in rs)
        ov = [ms([r["scores"]["overall"][k] for r in rs]) for k in ("text", "image", "group")]
        grp = [ms([r["scores"][s]["group"] for r in rs]) for s in SUBSETS[:4]]
        r1 = (f"{ms([r['heldout_i2t_r1'] for r in rs], 100, 0)} / "
              f"{ms([r['heldout_t2i_r1'] for r in rs], 100, 0)}")
        t = lambda k: sum(r["terms_mean_2nd_half"][k] for r in rs) / len(rs)
        terms = f"{t('eqsim_text'):.2g} / {t('eqsim_image'):.2g} / {t('eqsim_v1'):.2g}"
        secs = ms([r["train_s"] for r in rs], 1.0, 0)
        flags = rs[0]["flags"] or "(none)"
        print(f"| {c} | `{flags}` | {seeds} | " + " | ".join(ov + grp) +
              f" | {r1} | {terms} | {secs} |")


def main():
    if len(sys.argv) == 9 and sys.argv[1] == "--record":
        print(json.dumps(record(*sys.argv[2:9])))
        return 0
    if len(sys.argv) == 2 and not sys.argv[1].startswith("-"):
        tables(sys.argv[1])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
