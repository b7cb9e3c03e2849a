"""botocore's service models as chatcore loads them: a client's service is looked up by name, never by listing
every service botocore has (a cold-start cost); what the listing answers is unchanged."""

from __future__ import annotations

from typing import Any

import botocore.session
import pytest
from botocore.exceptions import UnknownServiceError
from botocore.loaders import Loader

from chatcore.aws import ServiceModels

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
