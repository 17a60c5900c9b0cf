#!/usr/bin/env python3
"""Regenerates the chat-template fixtures from transformers' own apply_chat_template and from
mlx-lm 0.32.2's dataset classes (the references).

    /tmp/tlvenv/bin/python tests/make_chat_fixtures.py     # from the repo root

Reads tests/fixtures/chat/templates/*.jinja (real chat templates; SOURCES.md says where each
came from) and tests/fixtures/tiny/tokenizer.json.
Writes tests/fixtures/chat/:
  tokenizer.json          the tiny model's vocabulary plus the templates' control tokens as
                          special added tokens (so that they encode as one id each)
  tokenizer_config.json   bos/eos and Qwen3's template: the folder is a tokenizer with a chat
                          template (no <think> token, so mlx-lm passes enable_thinking=False)
  expected.json           per template x conversation x add_generation_prompt (x tools): the
                          rendered text and ids (apply_chat_template tokenize=False / True), or
                          the error a template raises; and SNIPPETS, small templates that pin
                          one piece of Jinja each, with jinja2's output
  data/chat.jsonl, data/completions.jsonl, data/expected.json
                          {"messages": ...} and {"prompt", "completion"} lines (one with
                          "tools"), and the ids and mask offsets mlx-lm's ChatDataset and
                          CompletionsDataset give with mask_prompt off and on, its tokenizer
                          loaded by mlx_lm.tokenizer_utils.load from the folder above
    /tmp/tlvenv/bin/python tests/make_chat_fixtures.py --check DIR [--tunelens BIN]
renders every DIR/*.jinja over CONVERSATIONS (with and without add_generation_prompt and
tools) with transformers and with `BIN tokenize --messages --show-text --json` and lists where
they differ (a template both refuse counts as agreeing); writes nothing. The 57 templates of
llama.cpp's models/templates (two forks of 2026-12: ye-NX/llama.cpp, Raudbjorn/ggml-llama.cpp)
gave 1140 renders, none different.
strftime_now is pinned to NOW (2023-11-15 12:00 UTC: the same date in every time zone from
UTC-11 to UTC+11) by replacing the datetime that transformers' strftime_now reads.
"""
import datetime as dt
import glob
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from tokenizers import AddedToken, Tokenizer

import transformers.utils.chat_template_utils as ctu
from transformers import PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "chat")
TINY = os.path.join(ROOT, "tests", "fixtures", "tiny", "tokenizer.json")
NOW = 1700049600
BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
CONTROL = ["<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
           "<|eom_id|>", "<|python_tag|>", "<start_of_turn>", "<end_of_turn>", "[INST]", "[/INST]",
           "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_CALLS]", "[TOOL_RESULTS]",
           "[/TOOL_RESULTS]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "<|system|>", "<|user|>",
           "<|assistant|>", "<|end|>", "<tool_call>", "</tool_call>"]


class FixedDateTime(dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return dt.datetime.fromtimestamp(NOW, tz)


ctu.datetime = FixedDateTime

CONVERSATIONS = {
    "system_user": [{"role": "system", "content": "You are a terse assistant."},
                    {"role": "user", "content": "What is 2+2?"}],
    "multi_turn": [{"role": "user", "content": "Hello!"},
                   {"role": "assistant", "content": "Hi. How can I help?"},
                   {"role": "user", "content": "Count to three."},
                   {"role": "assistant", "content": "1, 2, 3."}],
    "special_chars": [{"role": "user", "content": "  quotes \" ' \\ {{ x }} {% if %} <|im_end|>\ttab\n"
                                                  "new line  "},
                      {"role": "assistant", "content": "caf\u00e9 \u65e5\u672c \U0001F600 </s>"}],
    "empty_content": [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}],
    # transformers drops null keys and copies reasoning to "thinking" and "reasoning_content"
    "extra_keys": [{"role": "user", "content": "Why?", "tool_calls": None},
                   {"role": "assistant", "content": "Because.", "reasoning": "It just is.", "tool_calls": None}],
}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "Name"},
                                                    "days": {"type": "integer"}},
                   "required": ["city"]}}}]


# Jinja semantics one at a time (whitespace control, scopes, filters, tests, methods, operators),
# rendered by jinja2 as transformers compiles templates, with the variables of VARS.
SNIPPETS = [
    "a\n  {% if true %}\n    x\n  {% endif %}\nb\n",
    "  {{ 1 }}  \n{%- if 1 -%}  y  {%- endif -%}  z",
    "{# c #}\n  {#- d -#}  e\n  {%+ if 1 %}k{% endif %}\n",
    "  {% for x in [1] %}\n  {{ x }}\n  {% endfor %}\n",
    "{{- '  a  ' -}}\n\n{{ 'b' }}\n  {%- set x = 1 %}\n  c\n",
    "line1\r\nline2\r\n{% if true %}\r\nx\r\n{% endif %}\r\n",
    "{% for i in range(3) %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}"
    "{{ loop.length }}{{ loop.revindex }}|{% endfor %}",
    "{% for i in [1,2,3,4] if i is even %}{{ i }}{{ loop.length }}{% else %}none{% endfor %}"
    "{% for x in [] %}a{% else %}empty{% endfor %}",
    "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i > 4 %}{% break %}"
    "{% endif %}{{ i }}{% endfor %}",
    "{% for m in [1,2,3] %}{{ loop.previtem }}-{{ loop.nextitem }};{{ loop.cycle('a','b') }}{% endfor %}",
    "{% for a, b in [[1, 2], [3, 4]] %}{{ a }}{{ b }}{% endfor %}{% for c in 'h\u00e9' %}[{{ c }}]"
    "{% endfor %}{% for k in {'x': 1, 'y': 2} %}{{ k }}{% endfor %}",
    "{% set ns = namespace(a=1, b='x') %}{% for i in range(3) %}{% set ns.a = ns.a + i %}{% endfor %}"
    "{{ ns.a }}{{ ns.b }}",
    "{% set x = 5 %}{% for i in [1] %}{% set x = 7 %}{{ x }}{% endfor %}{{ x }}"
    "{% if true %}{% set z = 3 %}{% endif %}{{ z }}",
    "{% set a, b = [1, 2] %}{{ a }}{{ b }}{% set ns = namespace() %}{% set ns.x = 3 %}{{ ns.x }}",
    "{% set t %}inner {{ 1 }}{% endset %}[{{ t }}]{% filter upper %}up {{ 'x' }}{% endfilter %}",
    "{% if a %}A{% elif b %}B{% elif c %}C{% else %}D{% endif %}",
    "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Bob') }} "
    "{{ greet('Al', punct='?') }} {{ greet(name='Z') }}",
    "{{ 'abc'[1:] }} {{ 'abcdef'[::-1] }} {{ [1,2,3,4][1:3] }} {{ [1,2,3][-1] }} {{ 'h\u00e9llo'[1] }} "
    "{{ [1,2,3][::2] }} {{ 'abc'[-2:] }} {{ '\u65e5\u672c\u8a9e'|length }} {{ '\u65e5\u672c\u8a9e'[::-1] }}",
    "{{ '  x y  '|trim }}|{{ 'Hello'|upper }}{{ 'Hello'|lower }}|{{ [1,2]|length }}{{ 'h\u00e9llo'|length }}|"
    "{{ none|default('d') }}{{ undefined_var|default('u') }}{{ ''|default('e', true) }}",
    "{{ {'a': 1, 'b': [1, 2.5, none, true, 'x\"y']}|tojson }}|{{ {'a': {'b': []}, 'c': {}}|tojson(indent=2) }}"
    "|{{ '\u00e9\n\x01'|tojson }}",
    "{{ {'a': 1}|tojson(indent=4) }}{{ [1,[2,3]]|tojson(separators=(',', ':')) }}"
    "{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }}",
    "{{ [3,1,2]|join(', ') }}|{{ ['a','b']|join }}|{{ {'x':1,'y':2}|items|list }}|{{ 42|string }}|"
    "{{ [1,2]|first }}{{ [1,2]|last }}",
    "{% set msgs = [{'role': 'user', 'content': 'a'}, {'role': 'assistant', 'content': 'b'}, "
    "{'role': 'user', 'content': 'c'}] %}{{ msgs|selectattr('role', 'equalto', 'user')|list|length }}"
    "{{ msgs|rejectattr('role', 'equalto', 'user')|map(attribute='content')|join }}"
    "{{ msgs|map(attribute='role')|unique|list }}{{ msgs|selectattr('content')|list|length }}",
    "{% set d = {'b': 2, 'a': 1} %}{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}"
    "{{ d.get('a') }}{{ d.get('z', 'zz') }}{{ d.keys()|list }}{{ d['b'] }}{{ d.b }}",
    "{{ 'a,b,,c'.split(',') }}{{ ' a  b '.split() }}{{ 'xxhixx'.strip('x') }}{{ 'hi\n'.rstrip() }}"
    "{{ '\nhi'.lstrip('\n') }}{{ 'aXbXc'.replace('X', '-') }}{{ 'abc'.startswith('ab') }}"
    "{{ 'abc'.endswith(('x','c')) }}",
    "{{ 'abc'.upper() }} {{ 'hello world'.title() }} {{ 'hELLO'.capitalize() }} {{ 'a-b'.find('-') }} "
    "{{ 'aaa'.count('a') }} {{ '-'.join(['x','y']) }} {{ 'a b'|replace(' ', '_') }}",
    "{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ 7 / 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 1 ~ 2 ~ 'x' }} {{ 'a' + 'b' }} "
    "{{ [1] + [2] }} {{ 'ab' * 3 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1.5e-7 }} {{ 100.0 }} {{ 10 / 4 }}",
    "{{ 1 < 2 }} {{ 'a' in 'abc' }} {{ 2 in [1,2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }} {{ not true }} "
    "{{ 1 == 1.0 }} {{ none is none }} {{ 1 if false }} {{ 'y' if true else 'n' }} {{ 'b' > 'a' }}",
    "{{ x is defined }} {{ 'a' is string }} {{ {} is mapping }} {{ [] is iterable }} {{ 3 is odd }} "
    "{{ 4 is divisibleby 2 }} {{ 1 is number }} {{ true is boolean }} {{ none is not none }} "
    "{{ x is undefined }} {{ 1 is integer }} {{ 1.0 is float }} {{ false is false }} {{ 'a' is sequence }}",
    "{{ (1, 2) }} {{ [1, 'a', none] }} {{ {'a': none} }} {{ none }} {{ true }} {{ 'it\\'s' }} "
    "{{ \"a\\tb\" }} {{ ['it\\'s'] }} {{ (1,) }}",
    "{{ [3,1,2]|sort }} {{ [3,1,2]|sort(reverse=true) }} {{ [1,2,3]|reverse|list }} {{ [1,2,3]|sum }} "
    "{{ [1,5,3]|max }} {{ 3.7|int }} {{ '42'|int }} {{ 2.567|round(2) }} {{ -3|abs }} {{ 'x'|float }}",
    "{{ dict(a=1)|tojson }} {{ range(2, 10, 3)|list }} {{ strftime_now('%Y-%m-%d %d %b %Y') }}",
    "{{ 'a' ~ none ~ true }} {{ [] ~ '' }} {{ 1 ~ 1.0 }} {{ 'x' if true }}{{ (1 if false) is defined }}",
    "{{ messages[0]['content'] }}|{{ messages[0].content }}|{{ messages|length }}|{{ messages[5] }}|"
    "{{ messages[-1].role }}|{{ messages[0].nokey }}|{{ messages[1:]|length }}|{{ bos_token }}{{ eos_token }}",
    "{{ messages[0].content is string and messages[0]['content'].strip() }}|{{ add_generation_prompt }}"
    "|{{ tools is none }}|{{ 'lines\nhere'.splitlines() }}",
    "{%- for message in messages -%}{{ message.role }}{%- endfor -%}\n\n",
    "{{ 'a' < 'b' < 'c' }} {{ 1 < 2 > 3 }} {{ 1 in [1] == true }} {{ ' a b '.split(none, 1) }} "
    "{{ [[1, 2], [3]]|sum(start=[]) }}",
    "{% set s = '\u00c9a \u00ff \u0109\u0108 \u03c9\u03a9 \u0436\u0416 \u03ac\u00b5' %}{{ s|upper }}|{{ s|lower }}|"
    "{{ '\u00e9lan \u03c9mega \u0436'|title }}|{{ '\u00e9A'.capitalize() }}",
    # select/reject/map/unique/reverse give iterators: always true, iterable, no len or index
    "{{ none|selectattr('a')|list }}{% if messages|selectattr('role', 'equalto', 'nobody') %}T{% endif %}"
    "{{ (messages|map(attribute='role'))[0] }}|{{ messages|map(attribute='role')|first }}|"
    "{{ 'user' in messages|map(attribute='role') }}|{{ [1,2]|reverse|list }}{{ (1,2)|list }}"
    "{{ messages|selectattr('role') is sequence }}",
    # Markup: |safe + str escapes the str; ~ does not
    "{{ 'a<'|safe + '<b>' }}|{{ '<x>' + 'y'|safe }}|{{ ('a'|safe) * 2 }}|{{ '<'|e }}|{{ '<'|e|e }}|"
    "{{ ('<'|safe)|trim + '&' }}|{{ '<' ~ 'x'|safe }}|{{ ('  <a '|safe).strip() + '>' }}",
    "{{ {'k\u00e9': '\u00e9\u65e5 \U0001F600 x\\n'}|tojson(ensure_ascii=true) }}|"
    "{{ [1, '\u00e9']|tojson(indent=1, ensure_ascii=true) }}",
    # an unknown filter or test inside if / a conditional expression fails only when it runs
    "{% if false %}{{ x|nosuchfilter }}{% endif %}{{ 1 if true else (x|nosuch2) }}",
]
SNIPPET_VARS = {"messages": CONVERSATIONS["system_user"], "add_generation_prompt": True, "tools": None,
                "documents": None, "bos_token": BOS, "eos_token": EOS}


def snippet_cases():
    out = []
    for src in SNIPPETS:
        try:
            out.append({"template": src, "text": ctu._compile_jinja_template(src).render(**SNIPPET_VARS)})
        except Exception as e:
            out.append({"template": src, "error": str(e)})
    return out


def chat_tokenizer_json():
    tok = Tokenizer.from_file(TINY)
    tok.add_special_tokens([AddedToken(c, special=True, normalized=False) for c in CONTROL])
    return tok.to_str(pretty=False)


def hf_tokenizer(path, template):
    t = PreTrainedTokenizerFast(tokenizer_file=path, bos_token=BOS, eos_token=EOS)
    t.chat_template = template
    return t


def render_cases(tok_path):
    cases = []
    for path in sorted(glob.glob(os.path.join(FIX, "templates", "*.jinja"))):
        name = os.path.basename(path)
        src = open(path, encoding="utf-8").read()
        t = hf_tokenizer(tok_path, src)
        for conv, msgs in CONVERSATIONS.items():
            variants = [(agp, None) for agp in (False, True)]
            if conv == "system_user":
                variants.append((True, TOOLS))
            for agp, tools in variants:
                case = {"template": name, "conversation": conv, "add_generation_prompt": agp}
                if tools:
                    case["tools"] = tools
                try:
                    text = t.apply_chat_template(msgs, tools=tools, add_generation_prompt=agp, tokenize=False)
                    ids = t.apply_chat_template(msgs, tools=tools, add_generation_prompt=agp,
                                                tokenize=True, return_dict=False)
                    case["text"], case["ids"] = text, ids
                except Exception as e:  # the template's raise_exception
                    case["error"] = str(e)
                cases.append(case)
    return cases


def data_fixtures(folder):
    from mlx_lm.tokenizer_utils import load
    from mlx_lm.tuner.datasets import ChatDataset, CompletionsDataset

    chat = [
        {"messages": CONVERSATIONS["system_user"] + [{"role": "assistant", "content": "4"}]},
        {"messages": CONVERSATIONS["multi_turn"]},
        {"messages": [{"role": "user", "content": "Weather in Paris?"},
                      {"role": "assistant", "content": "Sunny."}], "tools": TOOLS},
        {"messages": [{"role": "user", "content": "q"},
                      {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nanswer"}]},
        {"messages": CONVERSATIONS["special_chars"] + [{"role": "user", "content": "ends with a user turn"}]},
    ]
    comp = [
        {"prompt": "89 - 34 = ", "completion": "55"},
        {"prompt": "Translate: chat", "completion": "cat", "tools": TOOLS},
        {"prompt": "", "completion": "empty prompt"},
        {"prompt": "caf\u00e9 \U0001F600", "completion": " <|im_end|> inside"},
    ]
    tok = load(Path(folder))
    out = {"has_thinking": bool(tok.has_thinking)}
    for name, rows, cls in (("chat.jsonl", chat, ChatDataset), ("completions.jsonl", comp, CompletionsDataset)):
        with open(os.path.join(FIX, "data", name), "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        exp = {}
        for mask in (False, True):
            ds = cls(rows, tok, mask_prompt=mask) if cls is ChatDataset else \
                cls(rows, tok, "prompt", "completion", mask)
            exp["mask" if mask else "plain"] = [{"ids": list(ids), "offset": off}
                                                for ids, off in (ds.process(r) for r in rows)]
        out[name] = exp
    return out


def check(folder, binary):
    import subprocess
    ctu.datetime = dt.datetime  # both sides read today's date
    bad = n = 0
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(os.path.join(FIX, "tokenizer.json"), tmp)
        for path in sorted(glob.glob(os.path.join(folder, "*.jinja"))):
            src = open(path, encoding="utf-8").read()
            with open(os.path.join(tmp, "tokenizer_config.json"), "w", encoding="utf-8") as f:
                json.dump({"bos_token": BOS, "eos_token": EOS, "chat_template": src}, f)
            t = hf_tokenizer(os.path.join(tmp, "tokenizer.json"), src)
            for conv, msgs in CONVERSATIONS.items():
                for agp in (False, True):
                    for tools in (None, TOOLS):
                        try:
                            want = t.apply_chat_template(msgs, tools=tools, add_generation_prompt=agp,
                                                         tokenize=False)
                        except Exception as e:
                            want = None
                        with open(os.path.join(tmp, "m.json"), "w", encoding="utf-8") as f:
                            json.dump({"messages": msgs, "tools": tools}, f)
                        args = [binary, "tokenize", "--model", tmp, "--messages", os.path.join(tmp, "m.json"),
                                "--show-text", "--json"] + (["--add-generation-prompt"] if agp else [])
                        p = subprocess.run(args, capture_output=True)
                        got = json.loads(p.stdout)["text"] if p.returncode == 0 else None
                        n += 1
                        if got != want:
                            bad += 1
                            print(f"DIFF {os.path.basename(path)} {conv} agp={agp} tools={tools is not None}:"
                                  f" {p.stderr.decode().strip()[:200] if got is None else repr(got[:120])}")
    print(f"{n} renders, {bad} differ")
    return 1 if bad else 0


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--check":
        binary = sys.argv[sys.argv.index("--tunelens") + 1] if "--tunelens" in sys.argv else "./tunelens"
        return check(sys.argv[2], binary)
    os.makedirs(os.path.join(FIX, "data"), exist_ok=True)
    tok_json = chat_tokenizer_json()
    tok_path = os.path.join(FIX, "tokenizer.json")
    with open(tok_path, "w", encoding="utf-8") as f:
        f.write(tok_json)
    qwen3 = open(os.path.join(FIX, "templates", "Qwen-Qwen3-0.6B.jinja"), encoding="utf-8").read()
    cfg = {"bos_token": BOS, "eos_token": EOS, "clean_up_tokenization_spaces": False,
           "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": qwen3}
    with open(os.path.join(FIX, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
        f.write("\n")
    cases = render_cases(tok_path)
    with open(os.path.join(FIX, "expected.json"), "w", encoding="utf-8") as f:
        json.dump({"now": NOW, "bos_token": BOS, "eos_token": EOS, "conversations": CONVERSATIONS,
                   "cases": cases, "snippet_vars": SNIPPET_VARS, "snippets": snippet_cases()}, f, ensure_ascii=False, separators=(",", ":"))
    data = data_fixtures(FIX)
    with open(os.path.join(FIX, "data", "expected.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, separators=(",", ":"))
    n_err = sum("error" in c for c in cases)
    print(f"{len(cases)} render cases ({n_err} template errors), data: has_thinking={data['has_thinking']}")


if __name__ == "__main__":
    sys.exit(main())
