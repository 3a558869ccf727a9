"""Timer: expires grants, closes packages after retention, times out sign-offs, re-queues lost releases."""

from __future__ import annotations

import azure.functions as func

from shared.bootstrap import get_services

bp = func.Blueprint()


@bp.function_name("expire_grants")
@bp.timer_trigger(arg_name="timer", schedule="%EXPIRY_SCHEDULE%", run_on_startup=False, use_monitor=True)
def expire_grants(timer: func.TimerRequest) -> None:
    get_services().sweep.sweep()
