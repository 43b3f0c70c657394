from textvae.report import format_report


def test_report_keeps_a_space_after_a_long_iw_estimator_label():
    latent = dict(examples=2, tokens=10, rec=9.0, kl=1.0, elbo=-10.0, elbo_ppl=7.4, iw_nll=9.5, iw_ppl=6.7,
                  iw_estimator="IW-NLL (K=10000, flow prior)")
    text = dict(poems=False, strategy="sample", corpus=dict(count=2))
    report = dict(split="test", posterior="gaussian", seed=0, precision="fp32", latent=latent, text=text)
    assert "IW-NLL (K=10000, flow prior) 9.50   IW-PPL 6.70" in format_report(report)
    assert "  IW-NLL (K=4)                9.50" in format_report({**report, "latent": {
        **latent, "iw_estimator": "IW-NLL (K=4)"}})
