"""`loopctr` command line: parses and validates, then calls one library function.

User errors (bad input, bad config) print one message and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from loopctr import __version__
from loopctr.cli.data import add_data_commands
from loopctr.cli.table import text_table
from loopctr.errors import UserError
from loopctr.runtime import keep_freed_memory


def cmd_prepare(args):
    from loopctr.data.dataset import PreparedDataset
    from loopctr.data.leakage import leakage_report, leakage_warnings
    from loopctr.data.prepare import prepare_dataset

    content = {}
    for item in args.content or []:
        vocab, sep, path = item.partition("=")
        if not sep or not vocab or not path:
            raise UserError(f"--content {item}: expected VOCAB=FILE (e.g. item_id=items.npz)")
        content[vocab] = path
    prepare_dataset(args.dataset, args.out, source_dir=args.source, overwrite=args.overwrite,
                    synthetic_overrides=args.overrides, test_as_valid=args.test_as_valid, content=content)
    for line in leakage_warnings(leakage_report(PreparedDataset(args.out))):
        print(f"warning: {line} (`loopctr data info {args.out}` shows the checks)")


def cmd_pretrain_cross(args):
    from loopctr.train.pretrain_cross import pretrain_cross

    report = pretrain_cross(args.data, args.pairs, args.overrides)
    rows = [{"pair": pair, "seen_pairs": r["seen_pairs"], "held_out_error": r["held_out_error"],
             "table_error": r["held_out_error_of_table"], "fold_error": r["fold_error"],
             "fold_table_error": r["fold_error_of_table"], "stored_MB": r["stored_bytes"] / 1e6,
             "table_MB": r["table_bytes"] / 1e6} for pair, r in report.items()]
    print(text_table(rows, list(rows[0])))
    print(f"wrote {args.data}/cross/ (use with model.cross_features=[{','.join(report)}])")


def cmd_train(args):
    from loopctr.train import distributed
    from loopctr.train.trainer import train

    report = train(args.data, args.out, args.model, args.config, args.overrides, resume=args.resume)
    if distributed.is_main_process():
        print(text_table([report], ["model", "auc", "gauc", "logloss", "ne", "best_epoch", "train_samples_per_s"]))


def cmd_evaluate(args):
    from loopctr.train.evaluate import evaluate_run

    report = evaluate_run(args.run, args.split, args.data, depths=args.depths, budget=args.budget, cold=args.cold)
    if "adaptive" in report:
        a = report["adaptive"]
        rows = list(a["by_depth"]) + [{"depth": "oracle", **a["oracle"]},
                                      {"depth": f"adaptive ({a['mean_passes']:.2f} passes)", **a}]
        print(text_table(rows, ["depth", "auc", "gauc", "logloss", "ne", "calibration"]))
        print(f"adaptive depth: {a['mean_passes']:.3f} mean passes (budget {a['budget']:g}, threshold "
              f"{a['threshold']:.4f} chosen on validation), {a['headroom_captured']:.0%} of the oracle's headroom "
              f"over depth 1, {a['samples_per_s']:,.0f} samples/s")
        print(f"wrote {args.run}/adaptive.json and {args.run}/adaptive.png")
        return
    rows = [{"depth": "model", **report}] + [{**d} for d in report.get("by_depth", [])]
    if "oracle" in report:
        rows.append({"depth": "oracle", **report["oracle"]})
    rows += [{"depth": f"{key} rows ({part['rows']:,})", **part} for key, part in report.get("slices", {}).items()]
    print(text_table(rows, ["depth", "auc", "gauc", "logloss", "ne", "calibration"]))
    if "oracle" in report:
        share = ", ".join(f"{d['depth']}: {s:.2f}" for d, s in zip(report["by_depth"], report["oracle"]["depth_share"]))
        print(f"oracle headroom over depth {report['by_depth'][0]['depth']}: "
              f"{report['oracle']['headroom_auc']:+.4f} AUC; best-depth share {share}")
    print(f"wrote {args.run}/eval.json")


def cmd_serve(args):
    from loopctr.serve.server import ServeConfig, serve

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    given = {name: getattr(args, name) for name in ("inline_rows", "chunk_rows") if getattr(args, name) is not None}
    serve(args.run, ServeConfig(host=args.host, port=args.port, max_wait_ms=args.max_wait_ms,
                                max_request_rows=args.max_request_rows, **given))


def cmd_export(args):
    from loopctr.serve.export import export

    print(f"wrote {export(args.run, args.format, args.depth, args.out)}")


def cmd_report(args):
    from loopctr.report import load_runs, write_report, write_results

    if not (args.out or args.results_out):
        raise UserError("give --out DIR for the page and its figures, --results-out FILE.jsonl for results rows, "
                        "or both")
    runs = load_runs(args.runs)
    if args.results_out:
        write_results(runs, Path(args.results_out))
        print(f"wrote {len(runs)} results rows to {args.results_out}")
    if args.out:
        print(write_report(runs, Path(args.out)))
        print(f"\nwrote {Path(args.out) / 'report.md'} and its figures")


def sweep_of(args, models: list[str]):
    """The runs of `loopctr scale` or `loopctr tune` from their shared options."""
    from loopctr.scaling.sweep import Sweep, parse_grid

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    budget = args.time_budget_hours * 3600 if args.time_budget_hours is not None else None
    return Sweep(Path(args.data), Path(args.out), models, parse_grid(args.grid), seeds, args.overrides, budget)


def cmd_tune(args):
    from loopctr.tune import tune

    sweep = sweep_of(args, [args.model])
    summary = tune(sweep, args.random, args.search_seed, args.jobs)
    monitor = summary["monitor"]
    rows = [{"settings": " ".join(f"{k}={v}" for k, v in p["settings"].items()), "seeds": p["seeds"],
             f"valid {monitor}": p[f"valid_{monitor}"], "std": p["valid_std"]} for p in summary["points"]]
    print(text_table(rows, ["settings", "seeds", f"valid {monitor}", "std"]))
    chosen = " ".join(f"{k}={v}" for k, v in summary["chosen"]["settings"].items())
    test = "  ".join(f"{k} {v:.4f}" for k, v in summary["chosen_test"].items())
    print(f"chosen on validation: {chosen}; its test metrics (mean over its seeds): {test}")
    print(f"wrote {Path(args.out) / 'tune.json'}")


def cmd_scale(args):
    from loopctr.scaling.sweep import fit_results, run_sweep

    sweep = sweep_of(args, args.model)
    rows = run_sweep(sweep)
    fits = fit_results(rows, sweep.out)
    if rows:
        print(text_table(rows, ["run", "params_dense", "train_flops", "rows_train_used", "auc", "logloss"]))
    if fits:
        for f in fits:
            f["b interval"] = f"[{f['b_low']:.3f}, {f['b_high']:.3f}]" if f["b_low"] is not None else "one seed"
            f["power law"] = "yes" if f["holds"] else "no (R² < 0.8)"
        print(text_table(fits, ["model", "scale", "quality", "points", "a", "b", "b interval", "c", "r2",
                                "power law"]))
    print(f"wrote {sweep.out}/results.jsonl, fits.json" + (" and figures scale-*.png" if fits else
                                                           " (no scale took 3 distinct values: nothing to fit)"))


def cmd_demo(args):
    from loopctr.demo import run_demo

    run_demo(args.out, quick=args.quick)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loopctr", description="CTR prediction with loop-scaled Transformers.")
    p.add_argument("--version", action="version", version=f"loopctr {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("prepare", help="fit vocabularies on train and write a prepared dataset")
    s.add_argument("--dataset", required=True, help="built-in dataset name, or a schema .yaml")
    s.add_argument("--source", help="directory with the split files")
    s.add_argument("--out", required=True, help="prepared dataset directory to write")
    s.add_argument("--overwrite", action="store_true", help="replace a dataset prepared with other settings")
    s.add_argument("--test-as-valid", action="store_true",
                   help="BARS protocol: the test split doubles as validation (recorded in schema.json)")
    s.add_argument("--content", action="append", metavar="VOCAB=FILE",
                   help="item content vectors for a vocabulary (.npz key/value, .h5, .parquet id+vector, .npy id "
                        "in column 0), for model.content_interest; repeatable")
    s.add_argument("overrides", nargs="*", metavar="key=value",
                   help="generator settings (synthetic) or source options (see `loopctr data info NAME`)")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("pretrain-cross", help="pre-train explicit cross features of field pairs on a prepared "
                                              "dataset's train split (PCF-GNN-style), for model.cross_features")
    s.add_argument("data", help="prepared dataset directory (the matrices are written into it)")
    s.add_argument("--pairs", required=True, type=lambda text: [p for p in text.split(",") if p],
                   metavar="FIELD:FIELD,...", help="pairs of categorical fields, e.g. user_id:item_id,user_id:cate_id")
    s.add_argument("overrides", nargs="*", metavar="key=value",
                   help="settings: dim, layers, smoothing, holdout, steps, lr, eval_every, seed, threads")
    s.set_defaults(func=cmd_pretrain_cross)

    add_data_commands(sub)

    s = sub.add_parser("train", help="train a model into a run directory")
    s.add_argument("--data", help="prepared dataset directory")
    s.add_argument("--model", help="model name (see `loopctr models`)")
    s.add_argument("--out", required=True, help="run directory (must not exist, unless --resume)")
    s.add_argument("--config", help="YAML with model/train/data sections")
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint (with epochs=N: to a larger budget; with early_stop_patience=P: past a patience stop)")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. epochs=3 model.dnn_dropout=0.2")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("evaluate", help="evaluate a run's best weights; writes <run>/eval.json "
                                        "(--depths adaptive: <run>/adaptive.json)")
    s.add_argument("--run", required=True)
    s.add_argument("--split", default="test")
    s.add_argument("--data", help="prepared dataset (default: the one the run was trained on)")
    s.add_argument("--depths", help="looped models: metrics at these depths and the oracle over them: "
                                    "'all' (1 .. train_loops + 2) or a list like 1,2,5; or 'adaptive' (a depth "
                                    "per row, chosen by an exit head)")
    s.add_argument("--budget", type=float, help="--depths adaptive: mean loop passes allowed (default 1.5); the "
                                                "exit threshold is chosen on the validation split")
    s.add_argument("--cold", metavar="FIELD:N", help="also the metrics of the rows whose FIELD occurs fewer than N "
                                                     "times in train (cold) and of the others, e.g. item_id:5")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("serve", help="HTTP scoring service over a run or an export (POST /predict)")
    s.add_argument("--run", required=True, help="a run directory, or an export directory (loopctr export)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    s.add_argument("--max-wait-ms", type=float, default=0.0,
                   help="how long the micro-batcher waits for more requests (0: batches what is already queued)")
    s.add_argument("--max-request-rows", type=int, default=4096)
    s.add_argument("--inline-rows", type=int,
                   help="batches of at most this many rows (default 64) are scored on the event-loop thread, "
                        "larger ones on the model thread (0: all on the model thread)")
    s.add_argument("--chunk-rows", type=int,
                   help="score larger batches in chunks of this many rows of similar sequence length "
                        "(default 128; 0: one batch)")
    s.add_argument("--threads", type=int, default=0, help="torch intra-op threads for scoring (0: torch's default)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("export", help="write a self-contained TorchScript or ONNX artifact of a run")
    s.add_argument("--run", required=True)
    s.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript")
    s.add_argument("--depth", type=int, help="loop passes to trace (LoopCTR models)")
    s.add_argument("--out", help="output directory (default: inside the run directory)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("scale", help="a resumable sweep of runs over a grid of settings, with power-law fits "
                                     "and figures")
    s.add_argument("--data", required=True, help="prepared dataset directory")
    s.add_argument("--out", required=True, help="study directory: runs/, results.jsonl, fits.json, figures")
    s.add_argument("--model", action="append", required=True, help="a model to sweep (repeatable)")
    s.add_argument("--grid", action="append", default=[], metavar="key=v1,v2,...",
                   help="a setting and its values (repeatable; the sweep is their product), e.g. num_layers=1,2,4 "
                        "or train_fraction=0.1,0.3,1.0")
    s.add_argument("--seeds", default="1", help="comma-separated seeds (default 1)")
    s.add_argument("--time-budget-hours", type=float, help="start no new run after this long (repeat the command "
                                                           "to continue)")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="settings of every run, e.g. epochs=5")
    s.set_defaults(func=cmd_scale)

    s = sub.add_parser("tune", help="grid or random search over settings and seeds, selected on validation")
    s.add_argument("--data", required=True, help="prepared dataset directory")
    s.add_argument("--out", required=True, help="search directory: runs/ and tune.json")
    s.add_argument("--model", required=True)
    s.add_argument("--grid", action="append", required=True, metavar="key=v1,v2,...",
                   help="a setting and its values (repeatable; the search space is their product)")
    s.add_argument("--seeds", default="1", help="comma-separated seeds of every point (default 1)")
    s.add_argument("--random", type=int, help="train this many points drawn from the grid (default: all of it)")
    s.add_argument("--search-seed", type=int, default=0, help="the seed of the random draw")
    s.add_argument("--jobs", type=int, default=1, help="runs trained at a time; the cores are shared out among "
                                                       "them as torch threads")
    s.add_argument("--time-budget-hours", type=float, help="start no new run after this long")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="settings of every run, e.g. epochs=5")
    s.set_defaults(func=cmd_tune)

    s = sub.add_parser("report", help="tables (mean ± std over seeds, paired tests, depths) and figures of runs")
    s.add_argument("runs", nargs="+", help="run directories, directories with runs up to two levels below, or "
                                           "results files (.jsonl, as --results-out writes them)")
    s.add_argument("--out", help="directory for report.md and its PNG figures")
    s.add_argument("--results-out", metavar="FILE.jsonl",
                   help="write the runs as results rows (metrics and settings, no data), one JSON object a line")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("models", help="list the available models")
    s.set_defaults(func=lambda a: print("\n".join(sorted(__import__("loopctr.models", fromlist=["MODELS"]).MODELS))))

    s = sub.add_parser("demo", help="generate the built-in dataset, train every model, print a results table")
    s.add_argument("--out", default="runs/demo")
    s.add_argument("--quick", action="store_true", help="a smaller dataset and budget (for tests)")
    s.set_defaults(func=cmd_demo)
    return p


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """As `parse_args`, but `key=value` overrides may come anywhere, also after options (`train --data D
    epochs=1 --model din lr=1e-3`); argparse alone stops the overrides at the first option."""
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv=None) -> int:
    args = parse_args(build_parser(), argv)
    keep_freed_memory()
    code = 0
    try:
        args.func(args)
        sys.stdout.flush()  # a closed pipe shows here rather than as a traceback at interpreter exit
    except BrokenPipeError:  # the reader went away (`loopctr data info D | head -3`): stop quietly, as `cat` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141  # the shell's status for a process ended by SIGPIPE
    except UserError as exc:
        print(f"loopctr {args.command}: error: {exc}", file=sys.stderr)
        code = 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # every write is atomic (a temp file, then a rename), so what was there before is intact
        where = f" writing {exc.filename}" if exc.filename else ""
        print(f"loopctr {args.command}: error: no space left on the device{where}; the outputs written before are "
              "intact: free space and run the command again (a training run with --resume)", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"loopctr {args.command}: interrupted", file=sys.stderr)
        code = 130
    if "torch" in sys.modules:  # only a command that loaded torch can have run a process group
        from loopctr.train import distributed

        distributed.exit_process(code)  # a torchrun worker ends here
    return code


if __name__ == "__main__":
    sys.exit(main())
