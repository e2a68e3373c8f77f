"""`sail check certify` and `sail check verify`: the command-line face of :mod:`.certificate`."""

from __future__ import annotations

import argparse
from pathlib import Path


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def add_certify_parsers(checks, add_instance_arguments, build_instance) -> None:
    """``certify`` (with the checkers' instance flags and their ``build_instance``) and ``verify``."""
    help_text = "certified γ_c interval, μ, L and λ_F by branch and bound in interval arithmetic"
    c = checks.add_parser("certify", help=help_text, description=help_text + (
        ". Without --gamma: a witness of non-concavity at gamma_lo and a concavity certificate at "
        "gamma_hi, then μ, L and λ_F at the instance's γ; with --gamma G: μ (or a witness), L and λ_F at G."
    ))
    add_instance_arguments(c, outputs=False)
    c.add_argument("--certificate", type=Path, metavar="OUT", help="write the certificate (box trees and bounds) to this JSON file (gzip-compressed if it ends in .gz)")
    c.add_argument("--time-limit", type=_positive_float, default=120.0, metavar="S", help="seconds for the whole search (default 120; it stops at its first check past the limit, a few seconds later)")
    c.set_defaults(func=cmd_certify, build_instance=build_instance)
    help_text = "re-check a certificate written by `sail check certify --certificate` without the search"
    v = checks.add_parser("verify", help=help_text, description=help_text + "; exit 0 if it holds, 1 if it is rejected")
    v.add_argument("certificate", type=Path, metavar="CERT", help="the certificate JSON file")
    v.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    v.set_defaults(func=cmd_verify)


def cmd_certify(args) -> int:
    from sail.config import ConfigError
    from sail.io import dumps_strict
    from sail.theory.certify.certificate import certify
    instance = args.build_instance(args)
    if args.certificate is not None and args.certificate.is_dir():
        raise ConfigError("--certificate", f"must name a file, got the directory {str(args.certificate)!r}")
    if args.certificate is not None:
        from sail.theory.llm.command import output_directory

        output_directory(str(args.certificate.parent), "--certificate")  # created now: a bad path fails before the search
    _single_thread()
    cert = certify(instance, gamma=args.gamma, time_limit=args.time_limit, seed=args.seed)
    if args.certificate is not None:
        write_certificate(args.certificate, cert)
    summary = {k: v for k, v in cert.items() if k not in ("claims", "instance", "basis")}
    summary["claims"] = [{k: v for k, v in c.items() if k not in ("tree", "leaf_bounds")} for c in cert["claims"]]
    print(dumps_strict(summary, indent=1) if args.json else "\n".join(certify_lines(cert, args.certificate)))
    return 0


def write_certificate(path: Path, cert: dict) -> None:
    """JSON, gzip-compressed when the name ends in ``.gz``."""
    import gzip

    from sail.io import dumps_strict, write_bytes_atomically

    data = dumps_strict(cert).encode()
    write_bytes_atomically(path, gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


def read_certificate(path: Path) -> dict:
    """A certificate file (JSON, or gzip-compressed JSON for ``.gz``); ConfigError if unreadable."""
    import gzip

    from sail.config import ConfigError
    from sail.io import loads_strict

    if not path.is_file():
        raise ConfigError("CERT", f"no such file: {str(path)!r}")
    try:
        data = path.read_bytes()
        return loads_strict(gzip.decompress(data) if path.suffix == ".gz" else data.decode("utf-8"))
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError("CERT", f"{path} is not a JSON certificate ({' '.join(str(exc).split())})") from None


def _single_thread() -> None:
    import torch

    torch.set_num_threads(1)  # the arrays are small; threads only add overhead


def certify_lines(cert: dict, path: Path | None) -> list[str]:
    """The certified figures as a table: each constant's certified end beside the best verified
    value at a point (the true constant lies between the two)."""
    from sail.theory.report import fmt, table

    by_name = {c["claim"]: c for c in cert["claims"]}
    rows = []
    if "gamma_lo" in cert:
        ratio = cert["gamma_ratio"]
        if cert["gamma_hi"] is None:
            rows.append(("γ_c", f"≥ {fmt(cert['gamma_lo'])} (no γ certified in time)", ""))
        else:
            rows.append(("γ_c ∈ [γ_lo, γ_hi]", f"[{fmt(cert['gamma_lo'])}, {fmt(cert['gamma_hi'])}]", f"γ_hi/γ_lo = {fmt(ratio)}"))
    g = cert["gamma"]
    if cert["mu"] is not None:
        point = -by_name["concavity"]["best_point_lower_bound"]
        rows.append((f"μ at γ = {fmt(g)}", f"≥ {fmt(cert['mu'])}", f"≤ {fmt(point)}"))
    else:
        rows.append((f"μ at γ = {fmt(g)}", "not concave" if cert["concave_status"] == "fails" else "not certified in time", ""))
    point_l = max(by_name["smoothness_lower"]["best_point_lower_bound"], by_name.get("smoothness_upper", by_name.get("concavity", {})).get("best_point_lower_bound", -float("inf")))
    rows.append((f"L at γ = {fmt(g)}", f"≤ {fmt(cert['L'])}", f"≥ {fmt(point_l)}"))
    rows.append(("λ_F", f"≥ {fmt(cert['lambda_F'])}", f"≤ {fmt(-by_name['fisher_floor']['best_point_lower_bound'])}"))
    lines = [table(rows, ("constant", "certified", "at a verified point"))]
    if cert.get("witness") is not None:
        lines.append(f"witness of non-concavity at γ_lo: θ = {[round(x, 6) for x in cert['witness']]}")
    lines.append(f"{cert['boxes']} boxes, {cert['seconds']} s")
    if path is not None:
        lines.append(f"wrote {path} (check it with: sail check verify {path})")
    return lines


def cmd_verify(args) -> int:
    from sail.io import dumps_strict
    from sail.theory.certify.verify import CertificateError, verify

    path = args.certificate
    cert = read_certificate(path)
    try:
        result = verify(cert)
    except CertificateError as exc:
        print(f"sail check verify: certificate rejected: {exc}")
        return 1
    if args.json:
        print(dumps_strict(result, indent=1))
    else:
        for c in result["claims"]:
            value = c.get("upper_bound", c.get("lower_bound"))
            relation = "≤" if "upper_bound" in c else "≥"
            print(f"verified: {c['claim']:<24} λ_max(Uᵀ({c['a']:g}·∇²J + {c['b']:g}·∇²KL)U) {relation} {value:.6g}")
        print(f"certificate {path} holds ({len(result['claims'])} claims)")
    return 0


