"""botocore's service models as chatcore loads them: a client's service is looked up by name, never by listing
every service botocore has (a cold-start cost); what the listing answers is unchanged; the files are parsed into plain
dicts (botocore's own reader makes OrderedDicts, about three times as slow), with the same data in the same order."""

from __future__ import annotations

import gzip
import json
from collections import OrderedDict
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import UnknownServiceError
from botocore.loaders import JSONFileLoader, Loader

from chatcore.aws import PlainJsonFiles, ServiceModels

SERVICES = ("dynamodb", "secretsmanager", "ssm", "stepfunctions")


def _session(loader: Loader) -> botocore.session.Session:
    session = botocore.session.get_session()
    session.register_component("data_loader", loader)
    return session


def _recording(base: type[Loader]) -> Any:
    class Recording(base):  # type: ignore[valid-type,misc]
        whole_listings = 0

        def _potential_locations(self, name: str | None = None, must_exist: bool = False, is_dir: bool = False) -> Any:
            if name is None:  # botocore lists every folder of its search paths: the listing of every service
                self.whole_listings += 1
            return super()._potential_locations(name, must_exist, is_dir)

    return Recording()


@pytest.mark.parametrize(("base", "listed"), [(ServiceModels, False), (Loader, True)])
def test_clients_are_built_without_listing_every_service(base: type[Loader], listed: bool):
    loader = _recording(base)
    session = _session(loader)
    for service in SERVICES:
        client = session.create_client(
            service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        assert client.meta.service_model.service_name == service
    assert bool(loader.whole_listings) is listed  # botocore's own loader does list them: the check can fail


def test_unknown_services_are_refused_and_the_listing_is_botocores():
    ours, botocores = ServiceModels(), Loader()
    with pytest.raises(UnknownServiceError):
        _session(ours).create_client("no-such-service", region_name="us-east-1")
    names = ours.list_available_services("service-2")
    assert list(names) == botocores.list_available_services("service-2") and len(names) > 400
    assert all(s in names for s in SERVICES) and "no-such-service" not in names and "../dynamodb" not in names


def _files_a_client_reads() -> list[str]:
    """The data files (paths without their extension) that building a client of each service reads."""
    read: list[str] = []

    class Recording(PlainJsonFiles):
        def load_file(self, file_path: str) -> Any:
            data = super().load_file(file_path)
            if data is not None:
                read.append(file_path)
            return data

    session = _session(ServiceModels(file_loader=Recording()))
    for service in SERVICES:
        session.create_client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    return read


def _plain(data: Any) -> bool:
    if isinstance(data, dict):
        return type(data) is dict and all(_plain(value) for value in data.values())
    if isinstance(data, list):
        return all(_plain(value) for value in data)
    return True


def test_the_files_are_botocores_data_in_its_order_as_plain_dicts():
    read = _files_a_client_reads()
    names = {path.rsplit("/", 1)[-1] for path in read}
    assert {"endpoints", "partitions", "service-2", "endpoint-rule-set-1"} <= names, names
    for path in read:
        ours, botocores = PlainJsonFiles().load_file(path), JSONFileLoader().load_file(path)
        assert isinstance(botocores, OrderedDict) and _plain(ours)  # parsed the cheap way...
        assert json.dumps(ours) == json.dumps(botocores)  # ...into the same data, every key in the same order


def test_a_missing_file_is_none_and_a_compressed_one_is_read(tmp_path):
    assert PlainJsonFiles().load_file(str(tmp_path / "absent")) is None
    with gzip.open(tmp_path / "model.json.gz", "wb") as file:
        file.write('{"b": 1, "a": [{"é": null}]}'.encode())
    assert PlainJsonFiles().load_file(str(tmp_path / "model")) == {"b": 1, "a": [{"é": None}]}
    (tmp_path / "model.json").write_text('{"plain": true}')  # botocore's order: .json first
    assert PlainJsonFiles().load_file(str(tmp_path / "model")) == {"plain": True}
