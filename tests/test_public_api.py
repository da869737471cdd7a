import subprocess
import sys

import zipmodel
from zipmodel.codecs import CODECS
from zipmodel.container import format as fmt


def test_public_surface():
    for name in zipmodel.__all__:
        assert getattr(zipmodel, name) is not None
    assert {
        "compress_file",
        "decompress_file",
        "open",
        "compress_bytes",
        "decompress_bytes",
        "verify_file",
    } <= set(zipmodel.__all__)
    assert issubclass(zipmodel.FormatError, ValueError)
    assert issubclass(zipmodel.CorruptDataError, zipmodel.FormatError)
    assert issubclass(zipmodel.MissingDependencyError, ImportError)


def test_format_constants_are_pinned():
    assert fmt.FILE_MAGIC == b"\x89ZMODEL\n"
    assert (fmt.FORMAT_MAJOR, fmt.FORMAT_MINOR) == (1, 2)
    assert (fmt.CHUNK_MAGIC, fmt.INDEX_MAGIC, fmt.TRAILER_MAGIC) == (b"ZMCK", b"ZMIX", b"ZMTR")
    assert fmt.MAX_CHUNK_RAW == 64 << 20


def test_codec_ids_are_never_reused():
    # ids are written into files: extending this table is fine, changing an entry is not
    assert {k: v.name for k, v in CODECS.items() if k < 3} == {0: "raw", 1: "const", 2: "zstd"}
    from zipmodel.codecs import get_codec

    for cid in CODECS:
        c = get_codec(cid)
        assert c.codec_id == cid and c.name == CODECS[cid].name


def test_import_is_light():
    code = (
        "import sys, zipmodel, zipmodel.cli; "
        "heavy = [m for m in ('numba', 'torch', 'huggingface_hub', 'numpy', 'zstandard') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]", f"import zipmodel / --help pulled in {out}"
