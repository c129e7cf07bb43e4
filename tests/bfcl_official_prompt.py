"""Print the official BFCL prompt-mode messages for a few questions (bfcl-eval's own functions).

Runs under the bfcl-eval virtualenv (.ci/bfcl_venv.sh); tests/test_bfcl_prompt.py compares the output
with helpers.evaluate.bfcl_python_messages.

    python tests/bfcl_official_prompt.py rows.json messages.json

rows.json: [{"id", "category", "question" (the first turn's messages, as helpers.data loads it), "functions"}]  ->  messages.json: [[{"role", "content"}]]
"""

import atexit
import copy
import json
import os
import shutil
import sys
import tempfile


def main(rows_path, out_path):
    root = tempfile.mkdtemp(prefix="bfcl-root-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)   # removed when the script ends
    os.environ["BFCL_PROJECT_ROOT"] = root
    from bfcl_eval.model_handler.utils import system_prompt_pre_processing_chat_model
    from bfcl_eval.utils import _func_doc_language_specific_pre_processing

    out = []
    for row in json.load(open(rows_path)):
        functions = _func_doc_language_specific_pre_processing(copy.deepcopy(row["functions"]), row["category"])
        out.append(system_prompt_pre_processing_chat_model(copy.deepcopy(row["question"]), functions, row["id"]))
    json.dump(out, open(out_path, "w"))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} rows.json messages.json")
    main(sys.argv[1], sys.argv[2])
