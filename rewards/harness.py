"""The script every sandboxed program starts under (standalone: it imports nothing of r1distill).

    python -I harness.py CPU_SECONDS MEMORY_BYTES FILE_BYTES PROCESSES MODE [NAME]

It first sets the limits (soft = hard but for CPU seconds, so the program cannot raise them; the processes limit counts
within the sandbox's user namespace), then runs /box/main.py (or main.py beside it) by MODE:
- stdio: as `__main__`, its stdin the test's input; the parent compares its stdout.
- call: imported as module `solution`, then NAME (a function, or a method of class `Solution` as in
  LeetCode-style sets) called with the arguments read as a JSON list from stdin; the return value is
  written as JSON after a marker line, which the parent compares. The program never sees the expected
  output, so it cannot fake a pass.
- assert: `solution` imported, then test.py run in one namespace: every top-level `test_*` function is
  called, and `check(candidate)` (HumanEval) with the function NAME. A line `<nonce> <name> ok` per
  passing test goes to stdout, the nonce read from stdin first. These tests run in the program's own
  process, as in every set of this kind: only stdio and call tests are beyond a program's reach.
"""

import json
import os
import resource
import sys
import traceback

MARKER = "\x00r1distill-result\x00"
EXIT_EXCEPTION = 3


def limit(cpu: int, memory: int, file_bytes: int, processes: int) -> None:
    # Past CPU seconds SIGXCPU ends the program; one second later SIGKILL ends one that catches it.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    for name, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_FSIZE, file_bytes), (resource.RLIMIT_NPROC, processes), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(name, (value, value))


def load(path: str, name: str) -> dict:
    with open(path, encoding="utf-8") as file:
        source = file.read()
    namespace = {"__name__": name, "__file__": path, "__builtins__": __builtins__}
    exec(compile(source, path, "exec"), namespace)
    if name != "__main__":
        module = type(sys)(name)
        module.__dict__.update(namespace)
        sys.modules[name] = module
    return namespace


def callable_named(namespace: dict, name: str):
    if callable(namespace.get(name)):
        return namespace[name]
    solution = namespace.get("Solution")
    return getattr(solution(), name) if solution is not None else None


def main() -> int:
    cpu, memory, file_bytes, processes = (int(value) for value in sys.argv[1:5])
    mode, name = sys.argv[5], (sys.argv[6] if len(sys.argv) > 6 else "")
    folder = os.path.dirname(os.path.abspath(__file__))
    program = os.path.join(folder, "main.py")
    sys.path.insert(0, folder)
    stdin = sys.stdin.read() if mode != "stdio" else ""
    limit(cpu, memory, file_bytes, processes)
    try:
        if mode == "stdio":
            load(program, "__main__")
            return 0
        out = sys.stdout
        sys.stdout = sys.stderr  # the program's prints must not mix with the result
        namespace = load(program, "solution")
        if mode == "call":
            function = callable_named(namespace, name)
            if function is None:
                raise NameError(f"no function {name!r}")
            result = function(*json.loads(stdin))
            out.write("\n" + MARKER + "\n" + json.dumps(result, default=repr) + "\n")
            return 0
        nonce = stdin.strip()
        tests = load(os.path.join(folder, "test.py"), "test_solution")
        checks = [(key, value) for key, value in tests.items() if key.startswith("test") and callable(value)]
        if callable(tests.get("check")) and name:
            checks.append(("check", lambda: tests["check"](callable_named(namespace, name))))
        for key, test in checks:
            try:
                test()
            except Exception:
                traceback.print_exc()
                continue
            out.write(f"\n{nonce} {key} ok\n")
        out.write(f"\n{nonce} tests {len(checks)}\n")
        return 0
    except SystemExit as ended:
        return ended.code if isinstance(ended.code, int) else (0 if ended.code is None else 1)
    except BaseException:
        traceback.print_exc()
        return EXIT_EXCEPTION


if __name__ == "__main__":
    code = main()
    for stream in (sys.stdout, sys.__stdout__, sys.stderr):  # the program may have replaced sys.stdout
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)
