"""Can the joint stage move the shape? A small sweep over the geometry's learning rates, the landmark and prior
weights, the identity weight and the warm-up, run with benchmarks/joint.py's own code (its `Bench`, fit loop,
checkpoint and tables; only its configuration list is replaced by this one).

    python benchmarks/joint_shape_sweep.py [--sets ...] [--iterations 40] [--report]

Joint stage at the library's speed settings (160 px crop, id-hat every 4th step at 128 px; the measures are
taken at 160 px too), 40 iterations with 13 texture/light only unless a configuration says otherwise.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import joint  # noqa: E402
from joint import JointRates  # noqa: E402

FAST = {"resolution": 160, "id_hat_every": 4, "id_hat_resolution": 128}
GEOM10 = {"shape": 0.3, "expression": 0.3}
SWEEP = {  # name -> (changes of JointWeights, changes of JointStageConfig); "full" is the defaults
    "full": ({}, {}),
    "lr10": ({}, {"rates": JointRates(**GEOM10)}),
    "lr10_id10": ({"identity": 10.0}, {"rates": JointRates(**GEOM10)}),
    "lr10_prior0.1": ({"shape_prior": 0.1, "expression_prior": 0.1}, {"rates": JointRates(**GEOM10)}),
    "lr10_lm0.3": ({"landmark": 0.3}, {"rates": JointRates(**GEOM10)}),
    "lr10_warm5": ({}, {"rates": JointRates(**GEOM10), "warmup_iterations": 5}),
    "lr10_lm0.1": ({"landmark": 0.1}, {"rates": JointRates(**GEOM10)}),
    # second round
    "lr3": ({}, {"rates": JointRates(shape=0.1, expression=0.1)}),
    "lr30": ({}, {"rates": JointRates(shape=1.0, expression=1.0)}),
    "lr10_prior0.5": ({"shape_prior": 0.5, "expression_prior": 0.5}, {"rates": JointRates(**GEOM10)}),
    "lr10_id5": ({"identity": 5.0}, {"rates": JointRates(**GEOM10)}),
}
LABELS = {"landmarks": "landmark stage (start state)", "full": "defaults (shape/expr rate 0.03)",
          "lr10": "shape/expr rate 0.3", "lr10_warm5": "rate 0.3, warm-up 5 (not 13)",
          "lr10_lm0.1": "rate 0.3, landmark 0.1", "lr10_prior0.1": "rate 0.3, shape/expr priors 0.1",
          "lr10_id10": "rate 0.3, identity 10", "lr10_lm0.3": "rate 0.3, landmark 0.3",
          "lr3": "shape/expr rate 0.1", "lr30": "shape/expr rate 1.0", "lr10_prior0.5": "rate 0.3, priors 0.5",
          "lr10_id5": "rate 0.3, identity 5"}


class FastBench(joint.Bench):
    def __init__(self, iterations: int, pca: str | None = None) -> None:
        super().__init__(iterations, pca)
        self.base = replace(self.base, **FAST)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="*", default=["df_mvr_00331", "df_mvr_00336", "hrn_armie_hammer", "mvfnet_subject"])
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--configs", nargs="*", default=list(SWEEP))
    ap.add_argument("--checkpoint", default="/tmp/ganfit-shape-sweep/results.json")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    joint.ABLATIONS = {k: SWEEP[k] for k in args.configs}
    joint.Bench = FastBench
    joint.OUT = Path(args.checkpoint).parent
    path = Path(args.checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    ck = joint.checkpoint_io(path, args.iterations)
    if not args.report:
        joint.run_fits(argparse.Namespace(sets=args.sets, ablation_sets=args.sets, iterations=args.iterations, pca=None),
                       ck, path)
    print(joint.tables(ck, joint.load_model("bfm-3ddfa"), list(joint.ABLATIONS), LABELS))


if __name__ == "__main__":
    main()
