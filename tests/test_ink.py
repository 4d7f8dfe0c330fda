"""Ink readers on small hand-written InkML, IAM-OnDB and JSON documents, good and broken."""

from __future__ import annotations

import time

import numpy as np
import pytest

from recog.ink import Ink, InkError, decode_ink, encode_ink, read_ink

INKML = b"""<?xml version="1.0" encoding="UTF-8"?>
<ink xmlns="http://www.w3.org/2003/InkML">
  <traceFormat>
    <channel name="X" type="decimal"/>
    <channel name="Y" type="decimal"/>
    <channel name="T" type="decimal"/>
  </traceFormat>
  <trace>10 0 0.00, 9 14 0.01, 8 28 0.02</trace>
  <traceGroup><trace>
    130 155 0.5, 144 159 0.51
  </trace></traceGroup>
</ink>"""


def test_inkml_points_and_times_in_document_order():
    ink = read_ink(INKML, name="a.inkml")
    assert len(ink.strokes) == 2
    np.testing.assert_allclose(ink.strokes[0], [[10, 0], [9, 14], [8, 28]])
    np.testing.assert_allclose(ink.strokes[1], [[130, 155], [144, 159]])
    np.testing.assert_allclose(ink.times[1], [0.5, 0.51])


def test_inkml_channel_order_comes_from_the_trace_format():
    document = b"""<ink><traceFormat><channel name="T"/><channel name="Y"/><channel name="X"/></traceFormat>
    <trace>0 5 1, 1 6 2</trace></ink>"""
    ink = read_ink(document)
    np.testing.assert_allclose(ink.strokes[0], [[1, 5], [2, 6]])
    np.testing.assert_allclose(ink.times[0], [0, 1])


def test_inkml_context_reference_and_extra_channels():
    document = b"""<ink xmlns="http://www.w3.org/2003/InkML">
    <definitions><context xml:id="ctx"><traceFormat xml:id="fmt">
      <channel name="Y"/><channel name="X"/><channel name="F"/></traceFormat></context></definitions>
    <trace contextRef="#ctx">1 2 200, 3 4 210</trace></ink>"""
    ink = read_ink(document)
    np.testing.assert_allclose(ink.strokes[0], [[2, 1], [4, 3]])
    assert ink.times is None


def test_inkml_difference_encoding_and_no_trace_format():
    # Explicit first point, then first differences ('), then second differences ("); a prefix holds
    # for its channel until the next one.
    ink = read_ink(b"<ink><trace>10 20, '1 '2, 1 2, \"0 \"0, 0 1</trace></ink>")
    np.testing.assert_allclose(ink.strokes[0], [[10, 20], [11, 22], [12, 24], [13, 26], [14, 29]])
    # Signs separate values without spaces, as the grammar allows.
    ink = read_ink(b"<ink><trace>10-5, 12-7</trace></ink>")
    np.testing.assert_allclose(ink.strokes[0], [[10, -5], [12, -7]])


IAM = b"""<?xml version="1.0" encoding="ISO-8859-1"?>
<WhiteboardCaptureSession><StrokeSet>
  <Stroke colour="black" start_time="0.1" end_time="0.2">
    <Point x="1073" y="1058" time="0.1"/><Point x="1072" y="1060" time="0.11"/>
  </Stroke>
  <Stroke><Point x="1100" y="1000" time="0.3"/></Stroke>
</StrokeSet></WhiteboardCaptureSession>"""


def test_iam_ondb_strokes_points_and_times():
    ink = read_ink(IAM, name="a.xml")
    assert [len(s) for s in ink.strokes] == [2, 1]
    np.testing.assert_allclose(ink.strokes[0][1], [1072, 1060])
    np.testing.assert_allclose(ink.times[1], [0.3])


def test_json_with_and_without_times(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{"strokes": [[[0, 0, 0.0], [1, 1, 0.1]], [[5, 5, 0.4]]]}')
    ink = read_ink(path)
    assert ink.num_points == 3 and ink.times is not None
    ink = read_ink(b"[[[0, 0], [1, 2]]]")
    assert ink.times is None
    np.testing.assert_allclose(ink.points(), [[0, 0], [1, 2]])


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"<ink><trace>1 2, 3 4</ink>", "malformed XML"),
        (b"<ink></ink>", "no pen strokes"),
        (b"<ink><trace>1 2, 3 x</trace></ink>", "trace 1, point 2"),
        (
            b"<ink><traceFormat><channel name='X'/><channel name='Y'/></traceFormat><trace>1 2 3</trace></ink>",
            "3 values",
        ),
        (
            b"<ink><traceFormat><channel name='A'/><channel name='B'/></traceFormat><trace>1 2</trace></ink>",
            "no X and Y",
        ),
        (b"<svg><path/></svg>", "neither InkML"),
        (b"<StrokeSet><Stroke><Point x='1'/></Stroke></StrokeSet>", "has no 'y'"),
        (b"<StrokeSet><Stroke><Point x='1' y='z'/></Stroke></StrokeSet>", "bad <Point> value"),
        (b'{"strokes": [[[0, 0], [1]]]}', "stroke 1"),
        (b'{"strokes": [[[0, 0, 1]], [[1, 1]]]}', "time stamps"),
        (b'{"strokes": [[[0, "nan"]]]}', "NaN"),
        (b'{"strokes": [[1, 2}', "malformed JSON"),
        (b'{"points": []}', "'strokes' list"),
        (b"   ", "empty file"),
        (b"%PDF-1.4 binary", "not an ink file"),
    ],
)
def test_broken_documents_name_the_file_and_the_reason(document, reason):
    with pytest.raises(InkError) as caught:
        read_ink(document, name="broken.ink")
    message = str(caught.value)
    assert message.startswith("broken.ink: ") and reason in message


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InkError, match="missing.inkml: file not found"):
        read_ink(tmp_path / "missing.inkml")
    with pytest.raises(InkError, match="is a folder"):
        read_ink(tmp_path)


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE ink [
  <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
  <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
  <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
  <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
  <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
  <!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
  <!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;">
]>
<ink><trace>&g;</trace></ink>"""


def test_entity_bomb_fails_fast_with_a_clear_error(tmp_path):
    path = tmp_path / "bomb.inkml"
    path.write_bytes(BOMB)  # 20^6 * 57 bytes = 3.6 GB if it were expanded
    started = time.perf_counter()
    with pytest.raises(InkError, match=r"bomb\.inkml: XML declares entities, refused"):
        read_ink(path)
    assert time.perf_counter() - started < 1.0


def test_external_entity_is_refused(tmp_path):
    document = b"""<?xml version="1.0"?><!DOCTYPE ink [<!ENTITY x SYSTEM "file:///etc/passwd">]>
    <StrokeSet><Stroke><Point x="&x;" y="1"/></Stroke></StrokeSet>"""
    with pytest.raises(InkError, match="entities, refused"):
        read_ink(document, name="xxe.xml")


def test_shard_encoding_round_trip():
    ink = Ink([[[0, 0], [1.5, 2]], [[3, 3]]], [[0.0, 0.1], [0.5]])
    back = decode_ink(encode_ink(ink))
    assert [len(s) for s in back.strokes] == [2, 1]
    np.testing.assert_allclose(back.points(), ink.points())
    np.testing.assert_allclose(np.concatenate(back.times), [0.0, 0.1, 0.5])
    with pytest.raises(InkError, match="key-1: not an encoded ink sample"):
        decode_ink(b"not npz", name="key-1")


def test_integer_digitiser_ink_is_stored_exactly_and_compactly():
    rng = np.random.default_rng(0)
    steps = rng.integers(-3, 4, (3000, 2))
    ink = Ink([np.cumsum(steps, axis=0) + 5000], [np.round(100 + np.arange(3000) / 133.0, 3)])
    data = encode_ink(ink)
    back = decode_ink(data)
    np.testing.assert_array_equal(back.points(), ink.points())
    np.testing.assert_allclose(back.times[0], ink.times[0], atol=1e-4)
    assert len(data) < 3000 * 4  # under 4 bytes a point with its time
