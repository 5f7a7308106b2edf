"""Commands for the model tier: a health check and the dev model server (`triage model info` shows the tiers)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from triage.cli.common import JsonOption, cli, err, guard, out, print_json


def model_tiers_info() -> dict[str, Any]:
    """The configured model tiers and thresholds, as plain data (never the key)."""
    from triage.models.llm import model_specs
    from triage.settings import Settings

    settings = Settings()
    specs = guard(lambda: model_specs(settings))
    return {
        "configured": bool(specs),
        "base_url": settings.model_base_url,
        "api_key": "set" if settings.model_api_key is not None else "not set",
        "tiers": [
            {
                "tier": spec.tier,
                "model": spec.model,
                "input_price_per_1k": spec.input_price_per_1k,
                "output_price_per_1k": spec.output_price_per_1k,
            }
            for spec in specs
        ],
        "timeout_seconds": settings.model_timeout_seconds,
        "max_retries": settings.model_max_retries,
        "local_confidence_threshold": settings.local_confidence_threshold,
        "model_confidence_threshold": settings.model_confidence_threshold,
        "rewrites_replies": settings.model_rewrites_replies,
    }


def print_model_tiers(info: dict[str, Any]) -> None:
    """Print `model_tiers_info()` for a person."""
    if not info["configured"]:
        out.print("model tier: not configured (the local tier decides alone; set TRIAGE_CHEAP_MODEL to add one)")
        return
    out.print(f"model endpoint: {info['base_url'] or '(client default)'} (key {info['api_key']})")
    for tier in info["tiers"]:
        out.print(
            f"  {tier['tier']}: {tier['model']} (${tier['input_price_per_1k']}/1k in, "
            f"${tier['output_price_per_1k']}/1k out)"
        )
    out.print(
        f"  local tier decides at confidence >= {info['local_confidence_threshold']}; a model at >= "
        f"{info['model_confidence_threshold']}; timeout {info['timeout_seconds']} s, {info['max_retries']} retries; "
        f"reply rewrites {'on' if info['rewrites_replies'] else 'off'}"
    )


@cli.command()
def doctor(as_json: JsonOption = False) -> None:
    """Check the configuration: the policy bundle and, when a model is configured, that its endpoint answers."""
    from triage.models.llm import probe_endpoint
    from triage.policies import load_policy_bundle
    from triage.settings import Settings

    settings = Settings()
    bundle = guard(lambda: load_policy_bundle(settings.policy_dir))
    info = model_tiers_info()
    models: list[str] = guard(lambda: probe_endpoint(settings)) if info["configured"] else []
    missing = [t["model"] for t in info["tiers"] if models and t["model"] not in models]
    if as_json:
        print_json({"policy_version": bundle.version, "model_tiers": info, "endpoint_models": models})
    else:
        out.print(f"[green]ok[/] policy bundle {bundle.version}")
        print_model_tiers(info)
        if info["configured"]:
            out.print(f"[green]ok[/] model endpoint answers ({len(models)} model(s) listed)")
    for name in missing:
        err.print(f"[yellow]warning:[/] the endpoint does not list model {name!r}", highlight=False)


@cli.command("dev-model-server")
def dev_model_server(
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port on 127.0.0.1 \\[default: a free one].")] = 0,
) -> None:
    """Serve the dev OpenAI-compatible model server on 127.0.0.1 (rule-based answers, no network, no key)."""
    from triage.models.dev_server import DEV_MODELS, DevModelServer

    server = guard(lambda: _open_server(DevModelServer, port))
    cheap, strong = DEV_MODELS
    out.print(f"dev model server listening on {server.base_url}", highlight=False)
    out.print(
        f"export TRIAGE_MODEL_BASE_URL={server.base_url} TRIAGE_CHEAP_MODEL={cheap} TRIAGE_STRONG_MODEL={strong}",
        highlight=False,
        soft_wrap=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        err.print("stopped")


def _open_server(factory: Any, port: int) -> Any:
    from triage.errors import TriageError

    try:
        return factory(port=port)
    except OSError as exc:
        raise TriageError(
            f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); pick another --port or omit it"
        ) from None
