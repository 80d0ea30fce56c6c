from integration.fhir.narrative import narrative


def test_values_are_escaped_and_empty_rows_left_out() -> None:
    text = narrative("Observation", "1", [("Konklusion", "ST < 1 mm & puls > 120"), ("Tom", ""), ("Ingen", None)])
    assert text["status"] == "generated"
    assert text["div"] == (
        '<div xmlns="http://www.w3.org/1999/xhtml"><p><b>Observation</b>: 1</p>'
        "<p><b>Konklusion</b>: ST &lt; 1 mm &amp; puls &gt; 120</p></div>"
    )


def test_markup_in_a_value_cannot_break_out() -> None:
    div = narrative("Patient", "1", [("Navn", "</p><script>x</script>")])["div"]
    assert "<script>" not in div and "&lt;script&gt;" in div
