"""Check that optuna-dashboard opens a bsnas study storage, through the dashboard's own HTTP API.

    pip install optuna-dashboard   # not a bsnas dependency
    python scripts/check_dashboard.py sqlite:///runs/<RUN>/study.db

Prints, per study, what the dashboard serves: its directions, the number of trials and of best (Pareto)
trials, and the parameter names of the first trial. Exits 1 when a request does not answer 200 OK.
"""

from __future__ import annotations

import json
import sys
from wsgiref.util import setup_testing_defaults

import optuna_dashboard


def get_json(app, path: str) -> dict:
    """GET `path` from the WSGI `app`; the decoded JSON body (exits when the status is not 200)."""
    environ: dict = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(app(environ, lambda line, headers, exc_info=None: status.append(line)))
    if not status[0].startswith("200"):
        sys.exit(f"optuna-dashboard answered {status[0]} for {path}: {body[:300]!r}")
    return json.loads(body)


def main(storage_url: str) -> None:
    app = optuna_dashboard.wsgi(storage_url)
    for summary in get_json(app, "/api/studies")["study_summaries"]:
        study = get_json(app, f"/api/studies/{summary['study_id']}")
        first = [param["name"] for param in study["trials"][0]["params"]] if study["trials"] else []
        print(f"optuna-dashboard opened study {summary['study_name']!r}: directions {summary['directions']}, "
              f"{len(study['trials'])} trials, {len(study['best_trials'])} best trials; "
              f"first trial's parameters: {', '.join(first)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
