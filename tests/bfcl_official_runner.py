"""Score a corpus of model outputs with the *official* BFCL checker (bfcl-eval).

Runs under the separate bfcl-eval virtualenv (.ci/bfcl_venv.sh), so it imports only bfcl_eval
and the standard library. tests/test_bfcl_checker.py writes the corpus, runs this script as a
subprocess and compares the verdicts with helpers.evaluate case by case.

    python tests/bfcl_official_runner.py corpus.json verdicts.json

corpus.json: {"rows": {row_id: {"category", "functions", "ground_truth"}},
              "cases": [{"id", "row", "output"}]}       (output = model text, BFCL prompting format)
verdicts.json: [{"id", "valid", "error_type"}]

Each case goes through the same functions as `bfcl evaluate` for one entry: the prompt-mode
handler's decode_ast (default_decode_ast_prompting), the call-format check, and ast_checker, or
the relevance rule for the irrelevance category. The handler is Llama-3.1-8B-Instruct in prompt
mode: it leaves function names unchanged (no "." -> "_" rewriting). A case on which the official
code raises is reported as invalid with error_type "checker_error:<Exception>".
"""

import atexit
import json
import os
import shutil
import socket
import sys
import tempfile

MODEL_REGISTRY_NAME = "meta-llama/Llama-3.1-8B-Instruct"  # prompt mode, underscore_to_dot=False
MODEL_DIR_NAME = MODEL_REGISTRY_NAME.replace("/", "_")  # the form BFCL passes to ast_checker


def block_network():
    """bfcl-eval imports API clients (openai, anthropic, ...); none may reach the network here."""
    def refuse(*args, **kwargs):
        raise OSError("bfcl_official_runner: network access is disabled")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse


def main(corpus_path, out_path):
    # bfcl-eval creates result/ and score/ folders under its project root at import time:
    # point that at a throwaway folder instead of the virtualenv.
    root = tempfile.mkdtemp(prefix="bfcl-root-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)   # removed when the script ends
    os.environ["BFCL_PROJECT_ROOT"] = root
    block_network()

    from bfcl_eval.constants.enums import Language, ReturnFormat
    from bfcl_eval.eval_checker import eval_runner

    handler = eval_runner.get_handler(MODEL_REGISTRY_NAME)
    with open(corpus_path) as f:
        corpus = json.load(f)
    rows = corpus["rows"]

    verdicts = []
    for case in corpus["cases"]:
        row = rows[case["row"]]
        category = row["category"]
        prompt_entry = {"id": case["row"], "function": row["functions"]}
        try:
            if "irrelevance" in category:
                result = eval_runner._evaluate_single_relevance_entry(
                    handler, case["row"], case["output"], prompt_entry, MODEL_DIR_NAME, category
                )
            else:
                result = eval_runner._evaluate_single_ast_entry(
                    handler, case["row"], case["output"], row["ground_truth"], prompt_entry,
                    MODEL_DIR_NAME, category, language=Language.PYTHON,
                    return_format=ReturnFormat.PYTHON, has_tool_call_tag=False,
                )
            verdicts.append({"id": case["id"], "valid": bool(result["valid"]), "error_type": result.get("error_type")})
        except Exception as e:  # the official checker itself raised on this input
            verdicts.append({"id": case["id"], "valid": False, "error_type": f"checker_error:{type(e).__name__}"})

    with open(out_path, "w") as f:
        json.dump(verdicts, f)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} corpus.json verdicts.json")
    main(sys.argv[1], sys.argv[2])
