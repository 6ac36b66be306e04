"""What the benchmarks and the test suite share: fake OpenAI backends and a Triage server as processes
(``fleet``, ``fake_openai``, ``stack``), a lean HTTP client and its timers (``rawhttp``, ``timing``), how a
request ended (``outcomes``), the load generator (``load``), synthetic artifacts (``synthetic``), a real
Prometheus (``prometheus``), LiteLLM's proxy (``litellm_proxy``), and the shared datasets' train rows
(``datasets``, ``train_rows``)."""
