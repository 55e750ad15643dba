"""`safereason serve` on the embedded model (SmolLM2-135M): the `openai` client streams a SafeThink-guarded
reply that reassembles to the whole one."""

from __future__ import annotations

import pytest

from safereason.serve import make_server


@pytest.mark.slow
def test_openai_client_streams_safethink_on_the_embedded_model(kit, smollm2_dir):
    # EOS ignored: the small model, not trained to reason, may otherwise stop right after the steering prefix
    cfg = kit.base_config(model=str(smollm2_dir), max_new_tokens=80, temperature=0.6, device="cpu",
                          dtype="float32", ignore_eos=True,
                          defense_options={"scorer": "serve-prefix", "max_step_tokens": 16})
    srv = make_server(cfg, port=0, api_key_env=kit.KEY_ENV + "_UNSET", served_model_name="smol")
    with kit.running(srv):
        c = kit.openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=900)  # slow CPUs
        kw = {"model": "smol", "messages": [{"role": "user", "content": "How do I pick a lock?"}], "seed": 3,
              "max_tokens": 80}
        whole = c.chat.completions.create(**kw)
        streamed = kit.collect(c.chat.completions.create(stream=True, **kw))
    msg = whole.choices[0].message
    assert msg.reasoning.startswith(kit.PREFIX)  # steered at step 1, and the prefix is reasoning
    assert (streamed.reasoning, streamed.content, streamed.finish_reason) == \
        (msg.reasoning, msg.content, whole.choices[0].finish_reason)
    assert streamed.n_reasoning > 5 and streamed.safereason["control"] == whole.model_extra["safereason"]["control"]
