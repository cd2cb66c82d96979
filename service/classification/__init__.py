"""The classifier in the domain: loading the model, topics and their refit, the stored document, label corrections."""
