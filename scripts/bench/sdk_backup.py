"""The straightforward backup a RingCentral developer would write with the official SDK.

    python scripts/bench/sdk_backup.py DEST DATE_FROM DATE_TO   (credentials in RC_* variables)

Lists the company call log of [DATE_FROM, DATE_TO) with recordings (perPage
1000, following `navigation.nextPage`), then downloads each recording's
`contentUri` one after the other with `platform.get`, the SDK's own download
path. On a 429 it sleeps for `Retry-After` seconds (60 if absent), as
RingCentral's rate-limit documentation advises, and tries again. Prints one
JSON line: elapsed seconds of the download loop, recordings, bytes, 429s seen.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")

from ringcentral import SDK  # noqa: E402
from ringcentral.http.api_exception import ApiException  # noqa: E402


def with_retry(call, stats):  # type: ignore[no-untyped-def]
    while True:
        try:
            return call()
        except ApiException as exc:
            response = exc.api_response().response()
            if response is None or response.status_code != 429:
                raise
            stats["throttled_429"] += 1
            time.sleep(float(response.headers.get("Retry-After", "60")))


def main() -> int:
    dest, date_from, date_to = sys.argv[1:4]
    sdk = SDK(os.environ["RC_APP_CLIENT_ID"], os.environ["RC_APP_CLIENT_SECRET"],
              os.environ["RC_SERVER_URL"])
    platform = sdk.platform()
    platform.login(jwt=os.environ["RC_USER_JWT"])
    stats = {"throttled_429": 0}
    started = time.monotonic()
    records = []
    url = "/restapi/v1.0/account/~/call-log"
    params: dict[str, object] | None = {
        "dateFrom": date_from, "dateTo": date_to, "withRecording": "true", "perPage": 1000,
    }
    while url:
        page = with_retry(lambda u=url, p=params: platform.get(u, p), stats).json_dict()
        records += page["records"]
        url = page.get("navigation", {}).get("nextPage", {}).get("uri")
        params = None
    listed = time.monotonic()
    count = nbytes = 0
    for record in records:
        recording = record.get("recording")
        if not recording:
            continue
        body = with_retry(lambda r=recording: platform.get(r["contentUri"]), stats).body()
        with open(os.path.join(dest, f"{recording['id']}.mp3"), "wb") as f:
            f.write(body)
        count += 1
        nbytes += len(body)
    done = time.monotonic()
    print(json.dumps({"elapsed_s": done - listed, "total_s": done - started, "recordings": count,
                      "bytes": nbytes, "throttled_429": stats["throttled_429"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
