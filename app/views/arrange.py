"""Arrange: drag a sketch in, tweak until the take sounds right, render the song, download.

Each part of the page is a module of ``app/arrange``; what the composer sets lives in the
session model (``app/state.py``), so any run of this page draws it as it was left.
"""

from __future__ import annotations

import streamlit as st

from app import ui
from app.arrange import compare_engines, grid, preview, render, settings, sketch

st.title("Arrange")
st.caption(
    "Drop a chip sketch, describe the band, and tweak until the take sounds right. "
    "The preview re-renders as you change settings; then render the whole song."
)
ui.interrupted_notice()

page = sketch.draw()  # stops here while there is no song
settings.draw_settings()
tables = settings.draw_tables(page)
page.settings = settings.settings_of(page, tables)

page.engine, model_error = ui.engine()
if page.engine is None and model_error is None:
    ui.watch_model_load()
elif page.engine is None:
    st.warning(
        "The model is not available, so takes cannot be rendered yet. Spectrogram "
        f"previews still work.\n\n{model_error}",
        icon=":material/cloud_off:",
    )
    st.page_link("views/model.py", label="Model & device settings", icon=":material/memory:")

preview.draw(page)
grid.draw(page)
compare_engines.draw(page)
render.draw(page, tables)
