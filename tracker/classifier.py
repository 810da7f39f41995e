"""The tracker's classifier of opens and clicks (pixelpost.core.classify), built from
`[classify]`: the configured rules, then the built-in table with the configured
windows."""

from __future__ import annotations

from pixelpost.config import ClassifyConfig
from pixelpost.core.classify import (
    Classifier,
    Rule,
    Verdict,
    builtin_rules,
    user_agent_pattern,
)


def classifier_for(config: ClassifyConfig) -> Classifier:
    """The configured rules, then the built-in table."""
    verdicts = {"machine": Verdict.MACHINE, "human": Verdict.HUMAN, "proxy": Verdict.PROXY}
    configured = [
        Rule(
            reason=rule.reason,
            verdict=verdicts[rule.verdict],
            kinds=rule.kinds,
            user_agent=user_agent_pattern(rule.user_agent)
            if rule.user_agent is not None
            else None,
            networks=rule.networks,
            method=rule.method,
            after_delivery=rule.after_delivery,
        )
        for rule in config.rules
    ]
    builtin = builtin_rules(
        click_after_delivery=config.click_after_delivery, link_burst=config.link_burst
    )
    return Classifier([*configured, *builtin])
