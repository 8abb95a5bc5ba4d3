"""Which CPU a benchmark ran on, for its JSON: these scripts' ratios depend on it (the same
2-core configuration has been more than one CPU model, with and without AVX-512)."""

import platform


def cpu_description() -> dict:
    """The CPU's model name, family and model numbers and its widest vector extensions, from
    `/proc/cpuinfo` (Linux); `platform.processor()` alone elsewhere."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model", "flags") and key not in fields:
                    fields[key] = value.strip()
                if not line.strip() and fields:
                    break  # the first processor's block is enough
    except OSError:
        return dict(processor=platform.processor())
    flags = set(fields.pop("flags", "").split())
    return dict(**fields, vector_extensions=[f for f in ("avx2", "fma", "avx512f", "avx512_bf16")
                                             if f in flags])
