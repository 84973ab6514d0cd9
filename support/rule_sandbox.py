"""
The rule-code sandbox: VerIF-style rule functions shipped inside data (`evaluate(response) -> bool`, a rubric item's
`code`) run in a child Python process with a time limit, never in the trainer's process.

    run_rule_code("def evaluate(r):\n    return len(r) < 10\n", ["short", "much too long a text"])  -> [True, False]

Only on explicit opt-in: judge.Judge(allow_rule_code=True), `python judge.py --allow-rule-code`. It is NOT a security
sandbox (the code can still read and write files): only for data you trust.
"""
import json
import logging
import os
import signal
import subprocess
import sys

log = logging.getLogger("rtt.judge")  # the judge's logger: its warnings read (and are filtered) as before


_RULE_RUNNER = r"""
import json, sys
job = json.load(sys.stdin)
ns = {"__name__": "rubric_rule"}
try:
    exec(compile(job["code"], "<rubric rule>", "exec"), ns)
    fn = ns["evaluate"]
except Exception as e:
    print(json.dumps({"error": f"{type(e).__name__}: {e}"})); sys.exit(0)
out = []
for r in job["responses"]:
    try:
        out.append(bool(fn(r)))
    except Exception:
        out.append(None)
print(json.dumps({"verdicts": out}))
"""


def _limit_child():  # runs in the child before exec (POSIX): cap its memory and CPU time
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    resource.setrlimit(resource.RLIMIT_CPU, (60, 60))


def run_rule_code(code: str, responses: list[str], timeout: float = 10.0) -> list[bool | None]:
    """Run `evaluate(response) -> bool` from `code` on each response in a separate Python process.

    The child is started with `python -I` (no site/user paths from the environment) in a process group of its own,
    gets the responses on stdin, and on POSIX is capped at 2 GiB of memory. After `timeout` seconds, and in any case
    once it has answered, the whole group is killed: a process the rule code started cannot outlive it. This keeps
    data from running inside the trainer's process, but it is NOT a security sandbox (the code can still read and
    write files): only enable rule code (`allow_rule_code=True`, `--allow-rule-code`) for data you trust.
    Returns exactly one verdict per response: None where the function raised, and None for all when the code failed,
    timed out, or answered with anything but one true/false/null per response (a short list is never padded).
    """
    failed = [None] * len(responses)
    posix = os.name == "posix"
    child = subprocess.Popen([sys.executable, "-I", "-c", _RULE_RUNNER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                             start_new_session=posix,
                             preexec_fn=_limit_child if posix else None)
    try:
        stdout, _ = child.communicate(json.dumps({"code": code, "responses": responses}), timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(child)
        child.communicate()  # reap it, close the pipes
        log.warning("rule code timed out after %.0fs: %.80r", timeout, code)
        return failed
    _kill_group(child)  # it has answered: anything it left running in the background goes too
    try:
        result = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError, RecursionError):
        result = None
    if not isinstance(result, dict) or "verdicts" not in result:
        why = result.get("error") if isinstance(result, dict) else None
        log.warning("rule code failed (%s): %.80r", why or f"exit {child.returncode}, no verdicts", code)
        return failed
    verdicts = result["verdicts"]
    if not isinstance(verdicts, list) or len(verdicts) != len(responses) \
            or not all(v is None or isinstance(v, bool) for v in verdicts):
        log.warning("rule code answered %.80r for %d responses (one true/false per response expected): all "
                    "counted as rule-code errors: %.80r", verdicts, len(responses), code)
        return failed
    return verdicts


def _kill_group(child: subprocess.Popen) -> None:
    """Kill the rule-code child and every process it started: its process group (POSIX), or the child alone."""
    if os.name == "posix":
        try:
            os.killpg(child.pid, signal.SIGKILL)  # the group id is the child's pid (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass  # the group is empty already
    else:
        child.kill()
