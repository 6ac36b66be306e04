"""Triage through the official openai SDK: a routed request, the decision headers, a streamed answer."""

import argparse

from openai import OpenAI

parser = argparse.ArgumentParser()
parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
args = parser.parse_args()

client = OpenAI(base_url=args.base_url, api_key="not-needed-locally")

raw = client.chat.completions.with_raw_response.create(
    model="triage:quality",  # or "triage", "triage:balanced", "triage:cost", "triage:0.7", or a backend name
    messages=[{"role": "user", "content": "Janet has 3 apples and buys 5 more. How many apples does she have?"}],
    max_tokens=48,
)
completion = raw.parse()
print("answer:   ", completion.choices[0].message.content.strip())
for header in ("x-triage-backend", "x-triage-reason", "x-triage-cluster", "x-triage-ood-score", "x-triage-knob",
               "x-triage-domain"):
    print(f"{header:20s} {raw.headers.get(header)}")
print("usage:    ", completion.usage)

print("streamed: ", end="")
for chunk in client.chat.completions.create(
    model="triage", messages=[{"role": "user", "content": "Name three primary colours."}],
    max_tokens=32, stream=True, stream_options={"include_usage": True},
):
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()
