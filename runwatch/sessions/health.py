"""The session health report: statistics judged against the configured thresholds (pure: no I/O)."""

from __future__ import annotations

from typing import Any

from .records import SessionConfig

__all__ = ["health_report"]


def health_report(stats: dict[str, Any], config: SessionConfig) -> dict[str, Any]:
    """Judge session statistics (see ``SessionMonitor.get_session_statistics``) against ``config``'s thresholds.

    Returns:
        ``{"status": "healthy" | "degraded" | "critical", "timestamp",
        "reasons": [...], "recommendations": [...], "checks": {name:
        {"status", "value", "threshold"}}, "statistics": {...}}``. The
        error rate above ``critical_error_rate`` is critical; above
        ``max_error_rate``, a user at ``max_suspicious_events_per_user``,
        a metric's p95 above its slow threshold, or hung or crashed
        sessions are degraded.
    """
    checks: dict[str, dict[str, Any]] = {}
    reasons: list[str] = []
    advice: list[str] = []

    def judge(name: str, status: str, value: Any, threshold: Any, reason: str, recommendation: str) -> None:
        checks[name] = {"status": status, "value": value, "threshold": threshold}
        if status != "healthy":
            reasons.append(reason)
            advice.append(recommendation)

    rate = stats["errors"]["rate"]
    status = "healthy"
    if rate > config.critical_error_rate:
        status = "critical"
    elif rate > config.max_error_rate:
        status = "degraded"
    worst = max(stats["errors"]["by_type"].items(), key=lambda item: item[1], default=("none", 0))[0]
    judge(
        "error_rate",
        status,
        rate,
        config.critical_error_rate if status == "critical" else config.max_error_rate,
        f"session error rate {rate:.1%} is above {config.max_error_rate:.1%}",
        f"investigate session errors, most of them {worst!r}",
    )
    limit = config.max_suspicious_events_per_user
    flagged = sorted(user for user, count in stats["suspicious_activity"]["by_user"].items() if count >= limit)
    judge(
        "suspicious_activity",
        "degraded" if flagged else "healthy",
        len(flagged),
        limit,
        f"{len(flagged)} user(s) with at least {limit} suspicious events: {', '.join(flagged)}",
        "review the flagged users' sessions; consider locking their accounts",
    )
    for metric_type, threshold in sorted(config.slow_metric_thresholds.items()):
        p95 = stats["metrics"].get(metric_type, {}).get("p95")
        slow = p95 is not None and p95 > threshold
        judge(
            f"slow_{metric_type}",
            "degraded" if slow else "healthy",
            p95,
            threshold,
            f"{metric_type} p95 {p95} is above {threshold}",
            f"find what makes {metric_type} slow (database, network, platform APIs)",
        )
    stuck = stats["sessions"]["hung"] + stats["sessions"]["crashed"]
    judge(
        "liveness",
        "degraded" if stuck else "healthy",
        stuck,
        0,
        f"{stats['sessions']['hung']} hung and {stats['sessions']['crashed']} crashed session(s)",
        "check the clients of the hung or crashed sessions",
    )
    order = {"healthy": 0, "degraded": 1, "critical": 2}
    overall = max((check["status"] for check in checks.values()), key=order.__getitem__)
    return {
        "status": overall,
        "timestamp": stats["timestamp"],
        "reasons": reasons,
        "recommendations": advice,
        "checks": checks,
        "statistics": stats,
    }
