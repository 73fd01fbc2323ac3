from django.db import models


class Customer(models.Model):
    email = models.CharField(max_length=255)
    contact = models.JSONField(default=dict)
    # Added by the zdm plan of migration 0002 (plans/add_phone.yaml), not by Django's DDL.
    phone = models.CharField(max_length=20, null=True, db_index=False)
