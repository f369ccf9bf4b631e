"""The S3 write path against an S3 server that checks every signature and permission: moto with
IAM authentication on (`INITIAL_NO_AUTH_ACTION_COUNT`: the setup's own calls go unchecked, every
later one is checked). Credentials reach the bridge the ways users give them (environment,
a profile file, a session token, a web identity token file); `check` names what is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import boto3
import orjson
import pytest
import requests
from conftest import BridgeProcess, Proxy, free_port, new_bucket, wait_for_port

from otel_s3_bridge.sample import sample_delivery

BUCKET = "signed-traces"
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                        "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")
SETUP_ACTIONS = 10  # the calls `checked_s3` makes before authentication starts


def _policy(*actions: str) -> str:
    return json.dumps({"Version": "2012-10-17",
                       "Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": "*"}]})


@pytest.fixture(scope="module")
def checked_s3(tmp_path_factory):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_ACTIONS)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, server)
    url = f"http://127.0.0.1:{port}"
    anyone = {"endpoint_url": url, "region_name": "us-east-1", "aws_access_key_id": "setup",
              "aws_secret_access_key": "setup"}
    boto3.client("s3", **anyone).create_bucket(Bucket=BUCKET)  # 1
    iam = boto3.client("iam", **anyone)
    keys = {}
    for user, actions in (("writer", ("s3:PutObject", "s3:DeleteObject", "s3:GetObject", "s3:ListBucket",
                                      "sts:AssumeRole")),
                          ("reader", ("s3:GetObject", "s3:ListBucket"))):
        iam.create_user(UserName=user)  # 2, 5
        iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=_policy(*actions))  # 3, 6
        key = iam.create_access_key(UserName=user)["AccessKey"]  # 4, 7
        keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
    trust = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "*", "Federated": "accounts.example.com"},
         "Action": ["sts:AssumeRole", "sts:AssumeRoleWithWebIdentity"]}]})
    role = iam.create_role(RoleName="bridge", AssumeRolePolicyDocument=trust)["Role"]["Arn"]  # 8
    iam.put_role_policy(RoleName="bridge", PolicyName="p", PolicyDocument=_policy("s3:PutObject", "s3:DeleteObject",
                                                                                   "s3:GetObject"))  # 9
    boto3.client("sts", **anyone).get_caller_identity()  # 10: the last unchecked call
    yield {"url": url, "keys": keys, "role": role}
    server.terminate()
    server.wait(10)


def _env(access_key: str, secret: str, token: str | None = None) -> dict[str, str]:
    env = {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret}
    if token:
        env["AWS_SESSION_TOKEN"] = token
    return env


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    return {**env, **extra}


def _blank_other_aws(extra: dict[str, str]) -> dict[str, str]:
    """For a process that inherits this one's environment: the other credential variables empty
    (the AWS chain skips an empty one), so that only the credentials under test are found."""
    return {**{name: "" for name in CREDENTIAL_VARIABLES if name in os.environ}, **extra}


def _check(checked_s3, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "otel_s3_bridge", "check", "--bucket", BUCKET, "--endpoint-url",
                           checked_s3["url"], "--region", "us-east-1", *extra], capture_output=True, text=True,
                          timeout=60, env=_clean_env(env))


def _stored_by_a_bridge(checked_s3, tmp_path, env: dict[str, str]) -> None:
    """A bridge with these credentials stores a delivery; read back with the writer's key."""
    bridge = BridgeProcess(["--bucket", BUCKET, "--endpoint-url", checked_s3["url"], "--region", "us-east-1",
                            "--spool-dir", str(tmp_path / "spool"), "--grpc-port", "0"], tmp_path / "bridge.log",
                           env=_blank_other_aws(env), grpc=False)
    try:
        generation_id = f"gen-{os.urandom(8).hex()}"
        response = requests.post(bridge.url, data=orjson.dumps(sample_delivery(generation_id, 1_790_000_000 * 10 ** 9)),
                                 headers={"Content-Type": "application/json"}, timeout=30)
        assert response.status_code == 200
        bridge.wait_until_uploaded()
    finally:
        assert bridge.stop() == 0
    writer = boto3.client("s3", endpoint_url=checked_s3["url"], region_name="us-east-1",
                          aws_access_key_id=checked_s3["keys"]["writer"][0],
                          aws_secret_access_key=checked_s3["keys"]["writer"][1])
    keys = [item["Key"] for item in writer.list_objects_v2(Bucket=BUCKET, Prefix="openrouter-traces/2026-09-21/")
            .get("Contents", ()) if generation_id in item["Key"]]
    assert len(keys) == 1, bridge.log
    record = orjson.loads(writer.get_object(Bucket=BUCKET, Key=keys[0])["Body"].read())
    assert record["generation_id"] == generation_id
    for secret in (checked_s3["keys"]["writer"][1], env.get("AWS_SECRET_ACCESS_KEY"), env.get("AWS_SESSION_TOKEN")):
        assert not secret or secret not in bridge.log


def test_environment_credentials_sign_what_s3_verifies(checked_s3, tmp_path):
    env = _env(*checked_s3["keys"]["writer"])
    result = _check(checked_s3, env)
    assert result.returncode == 0, result.stderr
    _stored_by_a_bridge(checked_s3, tmp_path, env)


def test_a_wrong_secret_and_an_unknown_key_are_bad_credentials(checked_s3):
    access_key, secret = checked_s3["keys"]["writer"]
    wrong_secret = _check(checked_s3, _env(access_key, secret[:-4] + "AAAA"))
    assert wrong_secret.returncode != 0 and "bad credentials" in wrong_secret.stderr, wrong_secret.stderr
    assert "SignatureDoesNotMatch" in wrong_secret.stderr
    unknown = _check(checked_s3, _env("AKIAUNKNOWNUNKNOWN12", secret))
    assert unknown.returncode != 0 and "bad credentials" in unknown.stderr, unknown.stderr
    assert secret not in wrong_secret.stderr + unknown.stderr


def test_the_aiobotocore_put_path_diagnoses_the_same(checked_s3):
    access_key, secret = checked_s3["keys"]["writer"]
    assert _check(checked_s3, _env(access_key, secret), "--s3-put-path", "aiobotocore").returncode == 0
    wrong = _check(checked_s3, _env(access_key, secret[:-4] + "AAAA"), "--s3-put-path", "aiobotocore")
    assert wrong.returncode != 0 and "bad credentials" in wrong.stderr and "SignatureDoesNotMatch" in wrong.stderr
    denied = _check(checked_s3, _env(*checked_s3["keys"]["reader"]), "--s3-put-path", "aiobotocore")
    assert denied.returncode != 0 and "access denied" in denied.stderr


def test_credentials_that_may_not_write_are_access_denied(checked_s3):
    result = _check(checked_s3, _env(*checked_s3["keys"]["reader"]))
    assert result.returncode != 0 and "access denied" in result.stderr, result.stderr


def test_a_profile_file(checked_s3, tmp_path):
    access_key, secret = checked_s3["keys"]["writer"]
    profiles = tmp_path / "credentials"
    profiles.write_text(f"[default]\naws_access_key_id = AKIANOTTHISONE000000\naws_secret_access_key = x\n\n"
                        f"[traces]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret}\n")
    env = {"AWS_SHARED_CREDENTIALS_FILE": str(profiles), "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_PROFILE": "traces"}
    result = _check(checked_s3, env)
    assert result.returncode == 0, result.stderr
    _stored_by_a_bridge(checked_s3, tmp_path, env)


def test_a_session_token(checked_s3, tmp_path):
    access_key, secret = checked_s3["keys"]["writer"]
    sts = boto3.client("sts", endpoint_url=checked_s3["url"], region_name="us-east-1", aws_access_key_id=access_key,
                       aws_secret_access_key=secret)
    assumed = sts.assume_role(RoleArn=checked_s3["role"], RoleSessionName="bridge")["Credentials"]
    env = _env(assumed["AccessKeyId"], assumed["SecretAccessKey"], assumed["SessionToken"])
    result = _check(checked_s3, env)
    assert result.returncode == 0, result.stderr
    _stored_by_a_bridge(checked_s3, tmp_path, env)


def test_a_web_identity_token_file(moto, s3, tmp_path):
    """IRSA's way: a token file and a role; botocore asks STS for credentials. (moto answers
    AssumeRoleWithWebIdentity only with its IAM checks off, so this runs against the plain moto, and
    a proxy in front of it tells which credentials signed the PUTs.)"""
    bucket = new_bucket(s3)
    proxy = Proxy(moto.url).start()
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJicmlkZ2UifQ.c2lnbmF0dXJl")
    env = {"AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/bridge", "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
           "AWS_ROLE_SESSION_NAME": "bridge", "AWS_ENDPOINT_URL_STS": moto.url,
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    try:
        result = subprocess.run([sys.executable, "-m", "otel_s3_bridge", "check", "--bucket", bucket,
                                 "--endpoint-url", proxy.url, "--region", "us-east-1"], capture_output=True,
                                text=True, timeout=60, env=_clean_env(env))
        assert result.returncode == 0, result.stderr
        counters = proxy.counters()
    finally:
        proxy.stop()
    [signer] = counters["signed_by"]
    assert signer.startswith("ASIA") and counters["with_session_token"] == counters["puts"] >= 1  # STS's


def test_no_credentials_at_all(checked_s3, tmp_path):
    env = {"AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
           "AWS_EC2_METADATA_DISABLED": "true"}
    result = _check(checked_s3, env)
    assert result.returncode != 0 and "no usable credentials" in result.stderr, result.stderr


def test_signatures_are_checked_here(checked_s3):
    """The premise: this server refuses what it cannot verify (else the tests above prove nothing)."""
    access_key, secret = checked_s3["keys"]["writer"]
    forged = boto3.client("s3", endpoint_url=checked_s3["url"], region_name="us-east-1",
                          aws_access_key_id=access_key, aws_secret_access_key=secret + "x")
    with pytest.raises(Exception, match="SignatureDoesNotMatch"):
        forged.put_object(Bucket=BUCKET, Key="forged.json", Body=b"{}")
