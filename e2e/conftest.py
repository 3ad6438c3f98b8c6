import pytest

from fakes import FakeProvider
from harness import Gateway


@pytest.fixture
def openai_fake():
    fake = FakeProvider(kind="openai", key="sk-openai-secret")
    yield fake
    fake.stop()


@pytest.fixture
def azure_fake():
    fake = FakeProvider(kind="azure", key="azure-secret-key", api_version="2025-01-01-preview")
    yield fake
    fake.stop()


@pytest.fixture
def gateway_factory(tmp_path):
    """Starts gateways on configs in tmp_path; stops them (and dumps logs on failure) at teardown."""
    started = []

    def start(*docs_or_paths, **kwargs):
        from harness import write_config
        paths = [p for p in docs_or_paths if not isinstance(p, str)]
        docs = [d for d in docs_or_paths if isinstance(d, str)]
        if docs:
            paths.append(write_config(tmp_path, *docs))
        gw = Gateway(paths or [tmp_path], **kwargs)
        started.append(gw)
        return gw.start()

    yield start
    for gw in started:
        gw.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        factory = item.funcargs.get("gateway_factory")
        if factory is not None:
            for cell in (factory.__closure__ or ()):
                value = cell.cell_contents
                if isinstance(value, list):
                    for gw in value:
                        report.sections.append(("gateway log", gw.read_log()[-6000:]))


@pytest.fixture
def anthropic_fake():
    from providers import AnthropicFake
    fake = AnthropicFake(key="sk-ant-provider-key")
    yield fake
    fake.stop()


@pytest.fixture
def bedrock_fake():
    from providers import BedrockFake
    fake = BedrockFake(access_key="AKIDEXAMPLE", secret_key="bedrock-secret-key", region="us-east-1")
    yield fake
    fake.stop()
