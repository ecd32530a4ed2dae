"""gettext message catalogs (`*.mo`) installed on the machine: found by language, read as
(English msgid, translated msgstr) pairs. Translation reads them as parallel text;
speech reads their English sentences to speak."""

from __future__ import annotations

import gettext
import glob
import os
from collections.abc import Iterable, Sequence

from transformer_jax.data.files import Pair


def find_catalogs(locale_dirs: Sequence[str], lang: str) -> list[str]:
  """All `*.mo` files for `lang` (and its regional variants, e.g. de_CH)."""
  files = []
  for root in locale_dirs:
    for pattern in (f"{lang}/LC_MESSAGES/*.mo", f"{lang}_*/LC_MESSAGES/*.mo",
                    f"{lang}@*/LC_MESSAGES/*.mo"):
      files.extend(glob.glob(os.path.join(root, pattern)))
  return sorted(set(files))


def read_catalog(path: str) -> Iterable[Pair]:
  """Yields (msgid, msgstr) pairs of one compiled catalog, singular forms only."""
  with open(path, "rb") as f:
    catalog = gettext.GNUTranslations(f)._catalog  # pylint: disable=protected-access
  for key, value in catalog.items():
    if isinstance(key, tuple):  # plural entry: (msgid, index); keep the singular.
      key, index = key
      if index != 0:
        continue
    if "\x04" in key:  # "context\x04msgid"
      key = key.split("\x04", 1)[1]
    yield key, value
