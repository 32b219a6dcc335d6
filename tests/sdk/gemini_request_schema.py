"""Checks Gemini request bodies against the google-genai SDK's own types (pydantic models generated
from Google's API definition, which refuse unknown fields): what llm_provider sends to a Gemini
provider must be what Google's SDK would accept.

stdin: a JSON array of request bodies (what the mock provider received). Prints `ok N`, or each
problem and exits 1.
"""

import json
import sys

from google.genai import types

FIELDS = {
    "contents": lambda v: [types.Content.model_validate(c) for c in v],
    "systemInstruction": types.Content.model_validate,
    "tools": lambda v: [types.Tool.model_validate(t) for t in v],
    "toolConfig": types.ToolConfig.model_validate,
    "generationConfig": types.GenerationConfig.model_validate,
    "safetySettings": lambda v: [types.SafetySetting.model_validate(s) for s in v],
}


def main():
    bodies = json.load(sys.stdin)
    problems = []
    for i, body in enumerate(bodies):
        if not isinstance(body, dict) or "contents" not in body:
            problems.append(f"request {i}: not a GenerateContentRequest: {body!r:.200}")
            continue
        for key, value in body.items():
            check = FIELDS.get(key)
            if check is None:
                problems.append(f"request {i}: unknown field {key!r}")
                continue
            try:
                check(value)
            except Exception as err:  # pydantic's ValidationError says which field and why
                problems.append(f"request {i}: {key}: {err}")
    if problems:
        print("\n".join(problems))
        return 1
    print(f"ok {len(bodies)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
