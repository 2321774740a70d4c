"""Exceptions and warnings raised by jaxenc.

Every error raised on bad input names what it could: the file, the subject, the story and what
was expected, so a user can find the offending piece of a 130 GB dataset without a debugger.
This module imports nothing from jaxenc and may be imported from every subpackage.
"""

from __future__ import annotations

import os

__all__ = [
    "JaxencError",
    "DataError",
    "AlignmentError",
    "ConfigError",
    "CheckpointError",
    "NonFiniteError",
    "DataWarning",
]


def _context(path=None, subject=None, story=None) -> str:
    parts = []
    if subject is not None:
        parts.append(f"subject {subject}")
    if story is not None:
        parts.append(f"story {story!r}")
    if path is not None:
        parts.append(f"file {os.fspath(path)}")
    return ", ".join(parts)


class JaxencError(Exception):
    """Base class of every error jaxenc raises on purpose.

    Parameters
    ----------
    message : str
        What went wrong and what was expected.
    path : str or os.PathLike, optional
        The file the problem was found in.
    subject : str, optional
        The subject concerned, e.g. ``"UTS01"``.
    story : str, optional
        The story concerned, e.g. ``"adollshouse"``.
    """

    def __init__(self, message: str, *, path=None, subject=None, story=None):
        self.message = message
        self.path = None if path is None else os.fspath(path)
        self.subject = subject
        self.story = story
        context = _context(path, subject, story)
        super().__init__(f"{context}: {message}" if context else message)


class DataError(JaxencError, ValueError):
    """A dataset file is missing, unreadable or inconsistent with the layout."""


class AlignmentError(JaxencError, ValueError):
    """Times or row counts that would silently misalign stimulus and response."""


class ConfigError(JaxencError, ValueError):
    """An option, config file or argument that jaxenc cannot use.

    Parameters
    ----------
    message : str
        What went wrong and what was expected; names the setting when there is one.
    setting : str, optional
        The setting at fault as the raising code knows it (``"block_size"``), so that a caller
        holding the config can name its key (:meth:`in_section`) without reading the message.
    path, subject, story
        As for :class:`JaxencError`.
    """

    def __init__(self, message: str, *, setting: str | None = None, path=None, subject=None, story=None):
        self.setting = setting
        super().__init__(message, path=path, subject=subject, story=story)

    def in_section(self, section: str) -> ConfigError:
        """This error with its setting named by its config key, ``section.setting``.

        Parameters
        ----------
        section : str
            The config section holding the setting, e.g. ``"evaluate"``.

        Returns
        -------
        ConfigError
            The setting's name in the message (its first mention) replaced by the key, or the
            key put in front when the message does not name it; ``setting`` is the key. The
            error itself when it has no setting.
        """
        if self.setting is None:
            return self
        key = f"{section}.{self.setting}"
        message = (self.message.replace(self.setting, key, 1) if self.setting in self.message
                   else f"{key}: {self.message}")
        return ConfigError(message, setting=key, path=self.path, subject=self.subject, story=self.story)


class CheckpointError(JaxencError):
    """A model checkpoint whose keys, shapes or files do not match the model."""


class NonFiniteError(JaxencError, FloatingPointError, ValueError):
    """NaN or infinity in an argument, the training data or a loss; names the argument, the
    subject and where. A :class:`ValueError` when the cause is a value given."""


class DataWarning(UserWarning):
    """Data that jaxenc repaired (masked voxels, resampled audio) rather than refused."""
