"""Checks Bedrock Runtime requests (Converse / ConverseStream) and the mock's Bedrock API against AWS's
own Python SDK core, botocore: its service model (generated from AWS's API definition) for the request
shapes, its SigV4 signer for the signatures, and its REST-JSON and event-stream parsers for the
answers.

stdin: one JSON object
    {"mock_url": "http://127.0.0.1:PORT" or null,
     "region": "us-east-1",
     "credentials": {"access_key_id": "...", "secret_access_key": "...", "session_token": null},
     "requests": [{"method": "POST", "path": "/model/<encoded id>/converse",
                   "headers": {"name": "value", ...}, "body": "<the JSON body text>"}, ...]}

a. With `mock_url`: a botocore bedrock-runtime client (endpoint_url the mock, the given region and
   credentials) calls converse and converse_stream, plain text and a tool round trip ("!tool weather
   in Paris" with a declared tool), and checks what botocore parsed (botocore's event-stream parser
   checks both CRCs of every frame); a client with a wrong secret must get InvalidSignatureException,
   so the mock's SigV4 check agrees with AWS's signer.
b. Each recorded request (what the gateway sent): the path is /model/{modelId}/converse or
   /converse-stream with the model id percent-encoded as botocore encodes it, and the body validates
   against botocore's input shape for that operation (unknown members, types, required members, enum
   values, lengths and ranges, unions with exactly one member, blobs as base64).
c. Each recorded request signed with AWS4-HMAC-SHA256: the signature botocore's SigV4Auth computes
   (service bedrock, the region and credentials given) over the method, https://{host}{path as sent},
   the headers named in SignedHeaders and the body, at the request's x-amz-date, equals the one sent.

Prints `ok <summary>`, or every problem and exits 1.
"""

import base64
import binascii
import json
import re
import sys
from urllib.parse import unquote

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from botocore.utils import percent_encode

SERVICE = "bedrock"
MODEL_ID = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
OPERATIONS = {"converse": "Converse", "converse-stream": "ConverseStream"}
PATH = re.compile(r"^/model/([^/?]+)/(converse|converse-stream)(\?.*)?$")
AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,\s*"
    r"SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})$"
)


# --- b. request bodies against botocore's service model -------------------------------------------


def validate(shape, value, path, problems):
    """Appends to `problems` every way `value` (parsed JSON) differs from botocore `shape`."""
    kind = shape.type_name
    where = path or "body"
    if kind == "structure":
        if shape.metadata.get("document"):
            return  # a Document: any JSON value
        if not isinstance(value, dict):
            problems.append(f"{where}: expected an object ({shape.name}), got {type(value).__name__}")
            return
        members = {
            name: member
            for name, member in shape.members.items()
            if not member.serialization.get("location")  # modelId travels in the URI
        }
        for key in value:
            if key not in members:
                problems.append(f"{where}: unknown member {key!r} of {shape.name}")
        if shape.metadata.get("union"):
            if len(value) != 1:
                problems.append(
                    f"{where}: union {shape.name} must set exactly one member, got {sorted(value)}"
                )
        for name in shape.required_members:
            if name in members and name not in value:
                problems.append(f"{where}: missing required member {name!r} of {shape.name}")
        for key, item in value.items():
            if key in members:
                validate(members[key], item, f"{path}.{key}" if path else key, problems)
    elif kind == "list":
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list ({shape.name}), got {type(value).__name__}")
            return
        check_length(shape, len(value), where, problems)
        for i, item in enumerate(value):
            validate(shape.member, item, f"{path}[{i}]", problems)
    elif kind == "map":
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a map ({shape.name}), got {type(value).__name__}")
            return
        for key, item in value.items():
            validate(shape.key, key, f"{path}.<key {key!r}>", problems)
            validate(shape.value, item, f"{path}.{key}", problems)
    elif kind == "string":
        if not isinstance(value, str):
            problems.append(f"{where}: expected a string ({shape.name}), got {type(value).__name__}")
            return
        if shape.enum and value not in shape.enum:
            problems.append(f"{where}: {value!r} is not one of {shape.enum}")
        check_length(shape, len(value), where, problems)
    elif kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{where}: expected an integer ({shape.name}), got {value!r}")
            return
        check_range(shape, value, where, problems)
    elif kind in ("float", "double"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            problems.append(f"{where}: expected a number ({shape.name}), got {value!r}")
            return
        check_range(shape, value, where, problems)
    elif kind == "boolean":
        if not isinstance(value, bool):
            problems.append(f"{where}: expected a boolean ({shape.name}), got {value!r}")
    elif kind == "blob":
        # REST-JSON sends blobs as base64 strings.
        if not isinstance(value, str):
            problems.append(f"{where}: expected base64 text ({shape.name}), got {type(value).__name__}")
            return
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"{where}: not valid base64")
            return
        check_length(shape, len(decoded), where, problems)
    elif kind == "timestamp":
        if not isinstance(value, (int, float, str)) or isinstance(value, bool):
            problems.append(f"{where}: expected a timestamp ({shape.name}), got {value!r}")
    else:
        problems.append(f"{where}: shape type {kind} not handled by this checker")


def check_length(shape, length, where, problems):
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and length < low:
        problems.append(f"{where}: length {length} below the minimum {low} of {shape.name}")
    if high is not None and length > high:
        problems.append(f"{where}: length {length} above the maximum {high} of {shape.name}")


def check_range(shape, number, where, problems):
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and number < low:
        problems.append(f"{where}: {number} below the minimum {low} of {shape.name}")
    if high is not None and number > high:
        problems.append(f"{where}: {number} above the maximum {high} of {shape.name}")


def normalize_escapes(text):
    return re.sub(r"%[0-9a-fA-F]{2}", lambda m: m.group(0).upper(), text)


def check_request(model, index, request, problems):
    label = f"request {index}"
    match = PATH.match(request.get("path", ""))
    if request.get("method", "POST").upper() != "POST":
        problems.append(f"{label}: method {request.get('method')}, not POST")
    if not match:
        problems.append(f"{label}: path {request.get('path')!r} is not /model/{{modelId}}/converse(-stream)")
        return None
    encoded, operation_name = match.group(1), OPERATIONS[match.group(2)]
    model_id = unquote(encoded)
    if normalize_escapes(encoded) != percent_encode(model_id):
        problems.append(
            f"{label}: model id segment {encoded!r} is not encoded as botocore encodes it "
            f"({percent_encode(model_id)!r})"
        )
    operation = model.operation_model(operation_name)
    validate(operation.input_shape.members["modelId"], model_id, "modelId", problems)
    try:
        body = json.loads(request.get("body") or "")
    except ValueError as err:
        problems.append(f"{label}: body is not JSON: {err}")
        return operation_name
    before = len(problems)
    validate(operation.input_shape, body, "", problems)
    for i in range(before, len(problems)):
        problems[i] = f"{label} ({operation_name}): {problems[i]}"
    return operation_name


# --- c. signatures recomputed with botocore's signer ----------------------------------------------


def check_signature(index, request, region, credentials, problems):
    label = f"request {index}"
    headers = {name.lower(): value for name, value in request.get("headers", {}).items()}
    authorization = headers.get("authorization", "")
    if not authorization.startswith("AWS4-HMAC-SHA256"):
        return False
    match = AUTH.match(authorization)
    if not match:
        problems.append(f"{label}: malformed SigV4 Authorization header: {authorization!r}")
        return True
    access_key, date, scope_region, service, signed, signature = match.groups()
    amz_date = headers.get("x-amz-date", "")
    if access_key != credentials["access_key_id"]:
        problems.append(f"{label}: signed with access key {access_key!r}, expected {credentials['access_key_id']!r}")
    if scope_region != region or service != SERVICE:
        problems.append(f"{label}: credential scope {scope_region}/{service}, expected {region}/{SERVICE}")
    if not re.fullmatch(r"\d{8}T\d{6}Z", amz_date) or amz_date[:8] != date:
        problems.append(f"{label}: x-amz-date {amz_date!r} does not match the scope date {date}")
        return True
    token = credentials.get("session_token")
    if token and headers.get("x-amz-security-token") != token:
        problems.append(f"{label}: x-amz-security-token missing or not the session token")
    names = signed.split(";")
    if names != sorted(names) or "host" not in names:
        problems.append(f"{label}: SignedHeaders {signed!r} not sorted or without host")
    missing = [name for name in names if name not in headers]
    if missing:
        problems.append(f"{label}: signed headers not sent: {missing}")
        return True
    body = (request.get("body") or "").encode()
    aws_request = AWSRequest(
        method=request.get("method", "POST"),
        url=f"https://{headers['host']}{request['path']}",
        headers={name: headers[name] for name in names},
        data=body,
    )
    aws_request.context["timestamp"] = amz_date
    signer = SigV4Auth(
        Credentials(credentials["access_key_id"], credentials["secret_access_key"], token),
        SERVICE,
        region,
    )
    canonical = signer.canonical_request(aws_request)
    expected = signer.signature(signer.string_to_sign(aws_request, canonical), aws_request)
    botocore_signed = signer.signed_headers(signer.headers_to_sign(aws_request))
    if botocore_signed != signed:
        problems.append(f"{label}: botocore would sign headers {botocore_signed!r}, the request signed {signed!r}")
    if expected != signature:
        problems.append(
            f"{label}: signature {signature} is not botocore's {expected}; botocore's canonical request:\n"
            + canonical
        )
    return True


# --- a. botocore against the mock ----------------------------------------------------------------


def client(session, url, region, credentials, secret=None):
    return session.create_client(
        "bedrock-runtime",
        region_name=region,
        endpoint_url=url,
        aws_access_key_id=credentials["access_key_id"],
        aws_secret_access_key=secret or credentials["secret_access_key"],
        aws_session_token=credentials.get("session_token"),
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def stream_events(response):
    """The stream's events as botocore parsed them (its parser checks each frame's CRCs)."""
    return [event for event in response["stream"]]


def check_mock(url, region, credentials, problems):
    session = botocore.session.get_session()
    bedrock = client(session, url, region, credentials)
    calls = 0

    def expect(condition, message):
        if not condition:
            problems.append(f"mock: {message}")

    user = [{"role": "user", "content": [{"text": "hello from botocore"}]}]
    answer = bedrock.converse(modelId=MODEL_ID, messages=user, inferenceConfig={"maxTokens": 100})
    calls += 1
    content = answer["output"]["message"]["content"]
    expect(content == [{"text": "hello from botocore"}], f"converse echoed {content!r}")
    expect(answer["stopReason"] == "end_turn", f"converse stopReason {answer['stopReason']!r}")
    usage = answer.get("usage", {})
    expect(
        usage.get("outputTokens") == 5 and usage.get("totalTokens") == usage.get("inputTokens", 0) + 5,
        f"converse usage {usage!r}",
    )
    expect("latencyMs" in answer.get("metrics", {}), "converse metrics without latencyMs")

    events = stream_events(bedrock.converse_stream(modelId=MODEL_ID, messages=user))
    calls += 1
    kinds = [next(iter(event)) for event in events]
    expect(kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"], f"stream events {kinds}")
    text = "".join(e["contentBlockDelta"]["delta"].get("text", "") for e in events if "contentBlockDelta" in e)
    expect(text == "hello from botocore", f"stream text {text!r}")
    stop = [e["messageStop"]["stopReason"] for e in events if "messageStop" in e]
    expect(stop == ["end_turn"], f"stream stopReason {stop}")
    metadata = [e["metadata"] for e in events if "metadata" in e]
    expect(metadata and metadata[0]["usage"]["outputTokens"] == 5, f"stream metadata {metadata}")

    tool_config = {
        "tools": [
            {
                "toolSpec": {
                    "name": "weather",
                    "description": "The weather in a city",
                    "inputSchema": {"json": {"type": "object", "properties": {"text": {"type": "string"}}}},
                }
            }
        ],
        "toolChoice": {"auto": {}},
    }
    ask = [{"role": "user", "content": [{"text": "!tool weather in Paris"}]}]
    answer = bedrock.converse(modelId=MODEL_ID, messages=ask, toolConfig=tool_config)
    calls += 1
    blocks = answer["output"]["message"]["content"]
    tool_use = blocks[0].get("toolUse", {}) if blocks else {}
    expect(
        tool_use.get("name") == "weather" and tool_use.get("input") == {"text": "weather in Paris"},
        f"converse tool call {blocks!r}",
    )
    expect(answer["stopReason"] == "tool_use", f"tool stopReason {answer['stopReason']!r}")
    if tool_use:
        follow_up = ask + [
            {"role": "assistant", "content": [{"toolUse": tool_use}]},
            {
                "role": "user",
                "content": [{"toolResult": {"toolUseId": tool_use["toolUseId"], "content": [{"text": "sunny, 21 C"}]}}],
            },
        ]
        answer = bedrock.converse(modelId=MODEL_ID, messages=follow_up, toolConfig=tool_config)
        calls += 1
        content = answer["output"]["message"]["content"]
        expect(content == [{"text": "sunny, 21 C"}], f"tool result echoed as {content!r}")

    events = stream_events(bedrock.converse_stream(modelId=MODEL_ID, messages=ask, toolConfig=tool_config))
    calls += 1
    starts = [e["contentBlockStart"]["start"]["toolUse"] for e in events if "contentBlockStart" in e]
    expect(len(starts) == 1 and starts[0]["name"] == "weather", f"stream tool start {starts}")
    pieces = [
        e["contentBlockDelta"]["delta"]["toolUse"]["input"]
        for e in events
        if "contentBlockDelta" in e and "toolUse" in e["contentBlockDelta"]["delta"]
    ]
    try:
        expect(json.loads("".join(pieces)) == {"text": "weather in Paris"}, f"stream tool input {pieces}")
    except ValueError:
        problems.append(f"mock: stream tool input is not JSON: {pieces}")
    stop = [e["messageStop"]["stopReason"] for e in events if "messageStop" in e]
    expect(stop == ["tool_use"], f"stream tool stopReason {stop}")

    wrong = client(session, url, region, credentials, secret=credentials["secret_access_key"] + "x")
    try:
        wrong.converse(modelId=MODEL_ID, messages=user)
        problems.append("mock: a request signed with a wrong secret was accepted")
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code")
        expect(code == "InvalidSignatureException", f"wrong secret answered {code!r}: {err}")
    calls += 1
    return calls


def main():
    config = json.load(sys.stdin)
    region = config.get("region") or "us-east-1"
    credentials = config.get("credentials") or {}
    problems = []
    summary = []

    if config.get("mock_url"):
        try:
            calls = check_mock(config["mock_url"], region, credentials, problems)
            summary.append(f"{calls} botocore calls to the mock")
        except Exception as err:  # a failed call is a finding, not a crash
            problems.append(f"mock: {type(err).__name__}: {err}")

    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    requests = config.get("requests") or []
    signed = 0
    for index, request in enumerate(requests):
        check_request(model, index, request, problems)
        if credentials and check_signature(index, request, region, credentials, problems):
            signed += 1
    summary.append(f"{len(requests)} requests ({signed} SigV4-signed)")

    if problems:
        print("\n".join(problems))
        return 1
    print("ok " + ", ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
