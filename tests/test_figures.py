"""The spectrogram figure: silence dark (in Streamlit too), plain Hz, note names, legends, size."""

from __future__ import annotations

import json
import re

import numpy as np
import plotly.colors
import plotly.io as pio
import pytest
import torch

from app.figures import note_name, spectrogram_figure
from neurochip.spectrogram import SpectrogramParams, mel_band_centers

PARAMS = SpectrogramParams()
PREVIEW_COLUMNS = 513  # 5.12 s of 10 ms columns, both ends included
START_S = 12.34


def picture(columns: int = PREVIEW_COLUMNS, seed: int = 0) -> torch.Tensor:
    """A (3, 512, W) float picture in [0, 1], white = silent, like the engine's."""
    gray = torch.rand(512, columns, generator=torch.Generator().manual_seed(seed))
    return gray.expand(3, -1, -1).contiguous()


def silent(columns: int = PREVIEW_COLUMNS) -> torch.Tensor:
    return torch.ones(3, 512, columns)


def with_tone(hz: float, columns: int = PREVIEW_COLUMNS) -> tuple[torch.Tensor, float]:
    """A silent picture with the mel band nearest ``hz`` at full level, and that band's Hz."""
    centers = mel_band_centers(PARAMS)
    band = int(np.argmin(np.abs(centers - hz)))
    image = silent(columns)
    image[:, 511 - band, :] = 0.0  # row 0 of the picture is the top (highest) band
    return image, float(centers[band])


def preview_figure():
    return spectrogram_figure({"input": picture(), "output": picture(seed=1)}, START_S)


def heatmaps(figure) -> list:
    return [trace for trace in figure.data if trace.type == "heatmap"]


def luminance(color: str) -> float:
    """Relative luminance (0 black .. 1 white) of an ``rgb(...)`` or hex colour."""
    r, g, b = plotly.colors.unlabel_rgb(plotly.colors.convert_colors_to_same_type(color)[0][0])

    def linear(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)


def hz_of(text: str) -> float:
    return float(text[:-1]) * 1000 if text.endswith("k") else float(text)


# --- notes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hz", "name"),
    [(440, "A4"), (261.63, "C4"), (277.18, "C#4"), (27.5, "A0"), (4186.0, "C8"), (450, "A4")],
)
def test_note_name(hz, name):
    assert note_name(hz) == name


def test_note_name_needs_a_positive_frequency():
    with pytest.raises(ValueError):
        note_name(0)


# --- colours ----------------------------------------------------------------------------------


def test_silence_is_dark_and_loud_is_bright():
    figure = spectrogram_figure({"input": silent()})
    [trace] = heatmaps(figure)
    assert np.all(np.asarray(trace.z) == trace.zmin)  # silence sits at the bottom of the scale
    scale = trace.colorscale
    assert luminance(scale[0][1]) < 0.01
    assert luminance(scale[-1][1]) > 0.7


def streamlit_front_end(spec: str, theme: str | None) -> dict:
    """What Streamlit's PlotlyChart front end does to a figure's JSON before drawing it: with
    any theme (None included) it replaces the placeholder colours #000001..#000040 anywhere in
    the text with real ones (here a loud red, to make a hit obvious)."""
    from streamlit.elements.lib import streamlit_plotly_theme

    placeholders = {
        value
        for name, value in vars(streamlit_plotly_theme).items()
        if name.isupper() and isinstance(value, str) and value.startswith("#")
    }
    assert "#000004" in placeholders  # Magma's darkest colour, the red block of issue 10
    for placeholder in placeholders:
        spec = spec.replace(placeholder, "#ff2b2b" if theme == "streamlit" else "#ab63fa")
    return json.loads(spec)


def test_silence_stays_dark_as_streamlit_serialises_and_draws_it():
    from streamlit.testing.v1 import AppTest

    def page():
        import streamlit as st
        import torch

        from app.figures import spectrogram_figure

        silence = torch.ones(3, 512, 120)
        st.plotly_chart(spectrogram_figure({"input": silence, "output": silence}), width="stretch")

    at = AppTest.from_function(page, default_timeout=60).run()
    assert not at.exception
    [chart] = at.get("plotly_chart")
    assert chart.proto.theme == "streamlit"  # the pages keep Streamlit's default theme
    for theme in ("streamlit", None):
        drawn = streamlit_front_end(chart.proto.spec, theme)
        for trace in drawn["data"][:2]:  # the levels (the third is the difference)
            assert luminance(trace["colorscale"][0][1]) < 0.01, theme
        # No colour of ours is a placeholder Streamlit would swap.
        assert not re.search(r"#0000[0-4][0-9]", json.dumps(drawn["data"]))


def test_difference_has_a_legend_saying_what_red_and_blue_mean():
    figure = preview_figure()
    assert [t.name or "" for t in figure.data] and len(heatmaps(figure)) == 3
    difference = heatmaps(figure)[2]
    bar = difference.colorbar
    assert bar.title.text  # e.g. "in output"
    labels = dict(zip(bar.tickvals, bar.ticktext, strict=True))
    assert labels[max(bar.tickvals)] == "louder" and labels[min(bar.tickvals)] == "quieter"
    assert difference.zmin == -difference.zmax  # "same" (0) in the middle of the scale
    top, bottom = difference.colorscale[-1][1], difference.colorscale[0][1]
    red = plotly.colors.unlabel_rgb(top)
    blue = plotly.colors.unlabel_rgb(bottom)
    assert red[0] > red[2] and blue[2] > blue[0]  # louder is red, quieter blue
    for level in heatmaps(figure)[:2]:
        assert level.showscale is not False and level.colorbar.title.text == "level"


def test_difference_is_output_minus_input():
    quiet, loud = silent(), with_tone(440)[0]
    figure = spectrogram_figure({"input": quiet, "output": loud}, START_S)
    inp, out, diff = (np.asarray(t.z, dtype=int) for t in heatmaps(figure))
    assert np.array_equal(diff, out - inp) and diff.max() == 100 and diff.min() == 0


# --- axes -------------------------------------------------------------------------------------


def test_frequency_ticks_are_plain_hz_in_increasing_order():
    figure = preview_figure()
    for name in ("yaxis", "yaxis2", "yaxis3"):
        axis = figure.layout[name]
        texts = list(axis.ticktext)
        assert all(re.fullmatch(r"\d+k?", t) for t in texts), texts
        hz = [hz_of(t) for t in texts]
        assert hz == sorted(hz) and len(set(hz)) == len(hz)  # not "10k, 5, 2, 1000, 5, 2"
        assert {"50", "100", "1k", "10k"} <= set(texts)
        assert list(axis.tickvals) == sorted(axis.tickvals)


def test_ticks_sit_at_their_frequency():
    figure = spectrogram_figure({"input": silent()})
    axis, [trace] = figure.layout.yaxis, heatmaps(figure)
    rows = list(trace.y)
    assert axis.range[0] <= min(axis.tickvals) and max(axis.tickvals) <= axis.range[1]
    for position, text in zip(axis.tickvals, axis.ticktext, strict=True):
        label = rows[int(round(position))]  # e.g. "A4 440 Hz"
        row_hz = float(label.split()[1])
        assert abs(12 * np.log2(row_hz / hz_of(text))) <= 0.5  # within a half semitone


def test_hover_names_the_note():
    figure = spectrogram_figure({"input": silent()})
    [trace] = heatmaps(figure)
    rows = list(trace.y)
    assert len(set(rows)) == len(rows)
    hz = [float(label.split()[1]) for label in rows]
    assert hz == sorted(hz)
    assert all(label.split()[0] == note_name(f) for label, f in zip(rows, hz, strict=True))
    assert any(label.startswith("A4 ") for label in rows)
    assert "%{y}" in trace.hovertemplate and "s" in trace.hovertemplate


@pytest.mark.parametrize("hz", [55.0, 440.0, 3000.0])  # bass (between mel bands) to treble
def test_a_tone_is_drawn_on_its_note(hz):
    image, band_hz = with_tone(hz)
    [trace] = heatmaps(spectrogram_figure({"input": image}))
    z = np.asarray(trace.z)
    loudest = list(trace.y)[int(np.argmax(z[:, 0]))]
    assert loudest.split()[0] == note_name(band_hz), (loudest, band_hz)
    assert z.max() == 100


@pytest.mark.parametrize("columns", [PREVIEW_COLUMNS, 18001])  # a preview; a 3-minute song
def test_time_axis_spans_the_pictures(columns):
    figure = spectrogram_figure({"input": picture(columns)}, START_S)
    [trace] = heatmaps(figure)
    span = (columns - 1) * PARAMS.hop_length / PARAMS.sample_rate
    assert figure.layout.xaxis.range == pytest.approx((START_S, START_S + span))
    cells = np.asarray(trace.z).shape[1]
    first_edge = trace.x0 - trace.dx / 2
    last_edge = trace.x0 + (cells - 1) * trace.dx + trace.dx / 2
    assert first_edge <= START_S + 1e-9 and last_edge >= START_S + span - 1e-9
    assert last_edge - first_edge < span + 2 * trace.dx


# --- weight -----------------------------------------------------------------------------------


def test_preview_figure_is_light():
    # 3 rows of 5.12 s: ~0.45 MB (it was ~5 MB of float32 at 512 rows).
    assert len(pio.to_json(preview_figure(), validate=False)) < 1_000_000


def test_long_song_figure_is_light():
    # A 3-minute song's input: ~0.4 MB (it was ~6 MB).
    figure = spectrogram_figure({"input": picture(18001)})
    assert len(figure.to_json()) < 1_000_000
    assert np.asarray(heatmaps(figure)[0].z).shape[1] <= 1600


def test_the_notes_kept_strip_colours_like_the_takes_badges():
    from app.figures import COLOURS, faithfulness_colour, faithfulness_figure

    strip = np.array([0.95, 0.7, 0.5, np.nan])
    figure = faithfulness_figure([0, 1, 2, 3], strip, [1, 2, 3, 4], score=0.72)
    colours = list(figure.data[0].marker.color)
    assert colours[:3] == [COLOURS["green"], COLOURS["orange"], COLOURS["red"]]
    # A take scoring 0.55 is red everywhere it scores so, whatever its own average.
    flat = faithfulness_figure([0, 1], np.array([0.55, 0.56]), [1, 2], score=0.555)
    assert set(flat.data[0].marker.color) == {COLOURS["red"]}
    assert [faithfulness_colour(s) for s in (0.9, 0.7, 0.3)] == ["green", "orange", "red"]
