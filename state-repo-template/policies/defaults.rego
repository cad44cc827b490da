# Default checks of the template, conftest-style: every message in `deny` blocks the app's
# change, every message in `warn` is shown but lets it roll out.
# Input: {"app": <App>, "placement": <app.spec.placement>, "change": {"previous": <App or null>, "commit": <sha>}}
package keelson.defaults

import rego.v1

# Apps that run an image say how much CPU and memory they need, so they can be placed and a
# noisy neighbour cannot starve them. (`manifests:` apps carry their own Kubernetes resources.)
deny contains msg if {
	input.app.spec.image
	some resource in ["cpu", "memory"]
	not input.app.spec.resources[resource]
	msg := sprintf("spec.resources.%s is required for apps that run an image", [resource])
}

# A tag can be pointed at other bits after review; a digest cannot. Critical apps should run
# exactly what was reviewed. A warning, so tag-based images still deploy while you move over.
warn contains msg if {
	input.app.metadata.labels.tier == "critical"
	image := input.app.spec.image
	not contains(image, "@sha256:")
	msg := sprintf("tier: critical app runs %s by tag; pin it by digest (image@sha256:…)", [image])
}
