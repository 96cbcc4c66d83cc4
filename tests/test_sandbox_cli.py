"""Starting the sandbox: the --orders file, ``bulkcapture sandbox`` errors, the subprocess runner
(credentials from the environment, the printed URL, a clean stop on SIGTERM)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from etl.cli import main
from etl.errors import InputError
from etl.sandbox import SandboxConfig, run_sandbox_subprocess
from etl.sandbox.orders import load_orders
from etl.sandbox.server import config_to_args

OM = "/ordermanagement/v1/orders"


def test_load_orders_csv_and_json(tmp_path: Path) -> None:
    csv_file = tmp_path / "orders.csv"
    csv_file.write_text("order_id,order_amount,purchase_currency,status,fraud_status,expires_at\n"
                        "a,1000,SEK,authorized,PENDING,2024-06-01T00:00:00Z\n"
                        "b,250,,,,\n")
    a, b = load_orders(csv_file)
    assert a == {"order_id": "a", "order_amount": 1000, "purchase_currency": "SEK",
                 "status": "AUTHORIZED", "fraud_status": "PENDING", "expires_at": 1_717_200_000.0}
    assert b == {"order_id": "b", "order_amount": 250}
    json_file = tmp_path / "orders.json"
    json_file.write_text(json.dumps({"orders": [{"order_id": "c", "order_amount": 5}]}))
    assert load_orders(json_file) == [{"order_id": "c", "order_amount": 5}]


@pytest.mark.parametrize(("name", "text", "says"), [
    ("o.csv", "order_id,order_amount\nx,ten\n", "entry 1: order_amount 'ten' is not an integer"),
    ("o.csv", "order_id,order_amount\n,10\n", "order_id is missing"),
    ("o.csv", "order_id,order_amount,status\nx,1,SHIPPED\n", "status 'SHIPPED'"),
    ("o.json", "{nope", "not valid JSON"),
    ("o.json", '{"orders": 3}', "list of objects"),
    ("o.txt", "", "unknown format"),
])
def test_load_orders_errors_name_the_file(tmp_path: Path, name: str, text: str,
                                          says: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match=str(path)) as err:
        load_orders(path)
    assert says in str(err.value)


def test_cli_unreadable_orders_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"
    result = CliRunner().invoke(main, ["sandbox", "--port", "0", "--orders", str(missing)])
    assert result.exit_code == 1
    assert f"Error: cannot read order book {missing}" in result.output
    assert "--orders" in result.output and "Traceback" not in result.output


def test_cli_half_credentials_is_an_error() -> None:
    result = CliRunner().invoke(main, ["sandbox", "--port", "0", "--username", "u"])
    assert result.exit_code == 1 and result.output.startswith("Error: set both")


def test_cli_help_has_an_example() -> None:
    result = CliRunner().invoke(main, ["sandbox", "--help"])
    assert result.exit_code == 0 and "bulkcapture sandbox --auto-authorize" in result.output


def test_config_to_args_round_trips_non_defaults(tmp_path: Path) -> None:
    args = config_to_args(SandboxConfig(auto_authorize=True, rate_limit=50, drop_rate=0.1,
                                        seed=7, orders_file=tmp_path / "o.csv"))
    assert args == ["--host", "127.0.0.1", "--port", "0", "--orders", str(tmp_path / "o.csv"),
                    "--auto-authorize", "--seed", "7", "--rate-limit", "50", "--drop-rate", "0.1"]


def test_subprocess_takes_env_credentials_and_orders(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULKCAPTURE_API_USERNAME", "shell-user")
    monkeypatch.setenv("BULKCAPTURE_API_PASSWORD", "shell-pw")
    orders = tmp_path / "orders.json"
    orders.write_text(json.dumps([{"order_id": "x", "order_amount": 900}]))
    with run_sandbox_subprocess(SandboxConfig.from_env(orders_file=orders)) as sb:
        assert sb.url.startswith("http://127.0.0.1:") and sb.process is not None
        assert sb.auth == ("shell-user", "shell-pw")
        with httpx.Client(base_url=sb.url, auth=sb.auth) as client:
            resp = client.post(f"{OM}/x/captures", json={"captured_amount": 900})
            assert resp.status_code == 201
            assert client.get(f"{OM}/x").json()["status"] == "CAPTURED"
            assert client.post(f"{OM}/y/captures",
                               json={"captured_amount": 1}).status_code == 404
            assert client.get(f"{OM}/x", auth=("sandbox", "sandbox")).status_code == 401
            [row] = client.get("/_sandbox/captures").json()
            assert row["capture_id"] == resp.headers["Capture-Id"]
        proc = sb.process
    assert proc.returncode == 0  # SIGTERM is a clean stop, not a kill


def test_subprocess_default_credentials_printed_and_sigint_stops(tmp_path: Path) -> None:
    with run_sandbox_subprocess(SandboxConfig(auto_authorize=True)) as sb:
        assert sb.auth == ("sandbox", "sandbox")
        assert "accepting username 'sandbox', password 'sandbox'" in "".join(sb.output)
        with httpx.Client(base_url=sb.url, auth=sb.auth) as client:
            assert client.post(f"{OM}/z/captures",
                               json={"captured_amount": 5}).status_code == 201
        assert sb.process is not None
        sb.process.send_signal(signal.SIGINT)
        assert sb.process.wait(timeout=10) == 0
