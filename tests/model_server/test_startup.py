"""Start-up behaviour: the command line, config.json validation, a model that fails to load,
and the one plain line about where models run."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys

import pytest

from model_server.config import ModelConfig, load_model_config
from model_server.errors import ConfigError
from model_server.examples import tabular_model
from tests.servers import ModelServerProcess


def sidemesh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sidemesh", *args], capture_output=True, text=True, timeout=120)


def test_sidemesh_lists_its_commands_and_each_explains_itself():
    top = sidemesh("--help")
    assert top.returncode == 0 and "model-server" in top.stdout
    sub = sidemesh("model-server", "--help")
    assert sub.returncode == 0
    for flag in ("--repository", "--host", "--http-port", "--grpc-port", "--make-examples", "--max-body-bytes"):
        assert flag in sub.stdout


def test_an_unknown_command_is_refused_with_the_list():
    result = sidemesh("frobnicate")
    assert result.returncode == 2
    assert "unknown command 'frobnicate'" in result.stderr and "model-server" in result.stderr


def test_importing_the_commands_parses_no_arguments():
    code = "import sys; sys.argv=['x','--bogus']; import sidemesh.cli, model_server.cli, model_server.server; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr


def test_a_missing_repository_is_a_clear_error(tmp_path):
    result = sidemesh("model-server", "--repository", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "repository:" in result.stderr and "is not a directory" in result.stderr


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"max_batch_size": -1}', "max_batch_size: expected an integer >= 0, got -1"),
        ('{"max_batch_size": "8"}', "max_batch_size: expected an integer, got '8'"),
        ('{"max_queue_size": 0}', "max_queue_size: expected an integer >= 1, got 0"),
        ('{"providers": ["TPU"]}', "providers: unknown provider 'TPU'"),
        ('{"batch": 4}', "unknown field(s) batch"),
        ("{not json", "not valid JSON"),
    ],
)
def test_config_json_errors_name_the_field(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_model_config(path)


def test_config_json_fields_are_read():
    assert ModelConfig(max_batch_size=0).batching is False
    assert ModelConfig(providers=("CPUExecutionProvider",)).providers == ("CPUExecutionProvider",)


def test_a_bad_config_json_stops_the_server_with_its_path(tmp_path):
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "model.onnx").write_bytes(tabular_model(1).SerializeToString())
    (tmp_path / "m" / "config.json").write_text('{"max_queue_delay_us": -5}')
    result = sidemesh("model-server", "--repository", str(tmp_path), "--http-port", "0", "--grpc-port", "0")
    assert result.returncode == 2
    assert "config.json: max_queue_delay_us: expected an integer >= 0, got -5" in result.stderr


def _get(server, path):
    conn = http.client.HTTPConnection(server.host, server.http_port, timeout=30)
    conn.request("GET", path)
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    return response.status, body


def test_a_broken_model_fails_alone_and_keeps_the_server_unready(tmp_path):
    (tmp_path / "good" / "1").mkdir(parents=True)
    (tmp_path / "good" / "1" / "model.onnx").write_bytes(tabular_model(1).SerializeToString())
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "model.onnx").write_bytes(b"this is not an onnx file")
    with ModelServerProcess(tmp_path) as server:
        output = "".join(server.lines)
        assert "model broken version 1 failed to load" in output
        assert "running good/1 on the CPU: no NVIDIA GPU device found" in output
        assert output.count("on the CPU") == 1, "the provider is stated once, in one line"
        status, body = _get(server, "/v2/health/ready")
        assert status == 503 and "broken/1 (failed)" in body["error"]
        status, body = _get(server, "/v2/models/broken/ready")
        assert status == 503 and "failed to load" in body["error"]
        assert _get(server, "/v2/models/good/ready")[0] == 200
        assert _get(server, "/v2/health/live")[0] == 200
        _grpc_sees_the_broken_model_as_unavailable(server)
        assert server.stop() == 0


def _grpc_sees_the_broken_model_as_unavailable(server):
    import grpc

    from model_server.proto import grpc_service_pb2 as pb
    from model_server.proto import grpc_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(server.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready is False
        assert stub.ModelReady(pb.ModelReadyRequest(name="broken"), timeout=30).ready is False
        assert stub.ModelReady(pb.ModelReadyRequest(name="good"), timeout=30).ready is True
        request = pb.ModelInferRequest(model_name="broken")
        request.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.append(0.0)
        try:
            stub.ModelInfer(request, timeout=30)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            assert "model 'broken' version 1 failed to load" in exc.details()
        else:
            raise AssertionError("inference on a model that failed to load succeeded")
