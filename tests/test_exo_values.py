"""Exchange Online's JSON becomes the same plain values the CLIXML reader gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bridge.exo.values import messages, odata_error, plain_rows


def test_companion_keys_are_dropped_and_values_typed_as_clixml_gives_them() -> None:
    rows = plain_rows([{
        "@odata.id": "x",
        "Guid@data.type": "System.Guid", "Guid@odata.type": "#Guid",
        "Guid": "0b6c4e2a-1f2d-4c1e-9a0b-1c2d3e4f5a6b",
        "LastSuccessSync@data.type": "System.DateTime",
        "LastSuccessSync": "2022-09-21T08:07:47.1234567Z",
        "WhenCreated@data.type": "System.DateTime",
        "WhenCreated": "2022-09-21T08:07:47.0000000+00:00",
        "NumberOfFoldersSynced@data.type": "System.Int32", "NumberOfFoldersSynced": 12,
        "ProhibitSendQuota": "35 MB (36,700,160 bytes)",
        "RetainDeletedItemsFor@data.type": "System.TimeSpan",
        "RetainDeletedItemsFor": "14.00:00:00",
        "EmailAddresses@odata.type": "#Collection(String)",
        "EmailAddresses": ["SMTP:a@contoso.com"],
        "LastPingHeartbeat": None,
        "DeviceOS": "iOS 17.5.1 21F90",
    }])
    assert rows == [{
        "Guid": "0b6c4e2a-1f2d-4c1e-9a0b-1c2d3e4f5a6b",
        "LastSuccessSync": datetime(2022, 9, 21, 8, 7, 47, 123456, tzinfo=UTC),
        "WhenCreated": datetime(2022, 9, 21, 8, 7, 47, tzinfo=UTC),
        "NumberOfFoldersSynced": 12,
        "ProhibitSendQuota": 36_700_160,
        "RetainDeletedItemsFor": timedelta(days=14),
        "EmailAddresses": ["SMTP:a@contoso.com"],
        "LastPingHeartbeat": None,
        "DeviceOS": "iOS 17.5.1 21F90",
    }]
    assert isinstance(rows[0]["LastSuccessSync"], datetime)


def test_a_date_looking_text_without_companion_is_still_a_date_but_plain_text_stays() -> None:
    [row] = plain_rows([{"When": "2024-01-02T03:04:05.0000000Z", "Name": "2024 plan"}])
    assert row == {"When": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "Name": "2024 plan"}


def test_odata_error_text_comes_from_details_and_names_the_exception() -> None:
    body = {"error": {"code": "NotFound", "message": "Error executing request. ", "details": [
        {"code": "Context", "target": "", "message":
         "Ex0FBD0C|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|"
         "The mobile device cannot be found."}],
        "innererror": {"message": "ignored", "type": "x"}}}
    record = odata_error(body, status=404)
    assert record is not None
    assert record.message == "The mobile device cannot be found."
    assert record.reason == "ManagementObjectNotFoundException"
    assert record.category == "ObjectNotFound"
    assert record.error_id.startswith("Ex0FBD0C,")


def test_odata_error_falls_back_to_the_inner_exception() -> None:
    body = {"error": {"code": "InternalServerError", "message": "Error executing request.",
                      "innererror": {"type": "T", "internalexception": {"message": "deep"}}}}
    record = odata_error(body, status=500)
    assert record is not None and record.message == "deep"
    assert odata_error("not an error", status=500) is None


def test_warnings_of_any_shape_become_lines() -> None:
    assert messages(["a", {"message": "b"}]) == ["a", "b"]
    assert messages(None) == []


def test_non_terminating_errors_are_split_like_odata_errors() -> None:
    from bridge.exo.values import error_records

    [record] = error_records([{"code": "Client", "message":
                               "Ex1|Microsoft.Exchange.X.ManagementObjectNotFoundException|gone"}])
    assert (record.message, record.reason, record.category) == (
        "gone", "ManagementObjectNotFoundException", "ObjectNotFound")
    assert error_records(["plain text"])[0].message == "plain text"
