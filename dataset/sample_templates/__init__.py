"""Code templates of dataset/make_sample_data.py, one module per defect subtype.

``common`` holds the shared rendering helpers; every other module exports
``TEMPLATES``, its subtype's ``(language, template function)`` pairs.
"""
