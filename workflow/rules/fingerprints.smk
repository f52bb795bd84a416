# The stamp each job reads (common.smk: stamp; sizepenalty.provenance): an empty file named by
# the fingerprint of the job's settings and data, made just before the job. It removes the job's
# stamps (and their logs) of other fingerprints, so the one left names what the job's outputs
# were made with.
rule fingerprint:
    output:
        stamp=L.stamp("{stage}", "{name}", "{fp}"),
    log:
        L.log("fingerprint", "{stage}/{name}.{fp}"),
    wildcard_constraints:
        stage=r"[a-z_]+",
        name=r".+",
        fp=r"[0-9a-f]{12}",
    localrule: True
    # every rule's environment (one that exists already: --use-conda only activates it)
    conda:
        "../../envs/sizepenalty.yaml"
    # touch and rm on the host: no container start per stamp (half of a study's jobs)
    container:
        None
    params:
        # shell words, quoted but for the glob of the fingerprint
        older=lambda w: [
            fingerprint_glob(L.stamp(w.stage, w.name, w.fp), w.fp),
            fingerprint_glob(L.log("fingerprint", f"{w.stage}/{w.name}.{w.fp}"), w.fp),
        ],
    shell:
        "for old in {params.older}; do"
        ' case "$old" in {output.stamp:q} | {log:q}) ;; *) rm -f -- "$old" ;; esac; done;'
        " touch -- {output.stamp:q};"
        " echo {wildcards.stage:q} {wildcards.name:q}: fingerprint {wildcards.fp:q} > {log:q}"
