"""``PlotsFolderDataset``: a folder of PNG figures (matplotlib's dataset saving a dict of figures)
whose kedro-viz preview shows them all. The stock preview opens ``filepath`` as one image file,
which for a folder is an IsADirectoryError, so the panel had no preview."""

from __future__ import annotations

from pathlib import Path

from kedro.io.core import get_filepath_str
from kedro_datasets._typing import ImagePreview
from kedro_datasets.matplotlib import MatplotlibDataset

from prefalign.datasets.previews import images_preview


class PlotsFolderDataset(MatplotlibDataset):
    """``matplotlib.MatplotlibDataset`` (same arguments) whose ``preview`` is one contact sheet of
    every PNG under ``filepath``, each titled with its file name, when ``filepath`` is a folder;
    a single image file previews as upstream.

    Example catalog entry::

        evaluation_plots:
          type: prefalign.datasets.plots.PlotsFolderDataset
          filepath: data/08_reporting/plots
          save_args: {format: png}
    """

    def preview(self) -> ImagePreview:
        path = Path(get_filepath_str(self._get_load_path(), self._protocol))
        if path.is_dir():
            return ImagePreview(images_preview(path))
        return super().preview()


__all__ = ["PlotsFolderDataset"]
