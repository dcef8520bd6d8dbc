#!/usr/bin/env python3
"""Every public header compiles alone (C11, the project's warnings, -Werror)."""
import glob
import os
import subprocess
import sys
import tempfile

cc, incdir = sys.argv[1], sys.argv[2]
flags = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-Wstrict-prototypes", "-Wmissing-prototypes",
         "-Wshadow", "-Wundef", "-D_GNU_SOURCE", "-fsyntax-only", "-I", incdir]
headers = sorted(glob.glob(os.path.join(incdir, "rdm", "*.h")))
failed = 0
print(f"1..{len(headers)}")
with tempfile.TemporaryDirectory() as tmp:
    for i, h in enumerate(headers, 1):
        name = os.path.basename(h)
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as f:
            f.write(f"#include <rdm/{name}>\n#include <rdm/{name}>\n")
        r = subprocess.run([cc, *flags, src], capture_output=True, text=True)
        if r.returncode == 0:
            print(f"ok {i} - rdm/{name} compiles alone (and twice)")
        else:
            failed += 1
            print(f"not ok {i} - rdm/{name}")
            for line in r.stderr.splitlines():
                print(f"# {line}")
sys.exit(1 if failed else 0)
